"""Tests for kernels.margin_softmax: values, gradients, finiteness, large C.

The losses are those of docs/sentence_similarity.md §3.
"""

import functools
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kernels import margin_softmax as ms

SCALE, MARGIN = 30.0, 0.35  # the seed's s and m (docs/sentence_similarity.md §6)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def psi_by_angle(c: float, kind: str, margin: float = MARGIN) -> float:
    """ψ from the angle itself (arccos, then the post's / ArcFace's formula), for the tests."""
    theta = math.acos(c)
    if kind == "softmax":
        return c
    if kind == "am":
        return c - margin
    if kind == "simpler_a":
        return min(math.cos(4 * theta), c)
    if theta + margin <= math.pi:
        return math.cos(theta + margin)
    return c - margin * math.sin(margin)  # insightface's fallback past θ = π − m


def unit_rows(key, shape):
    x = jax.random.normal(key, shape)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def unit_columns(key, shape):
    x = jax.random.normal(key, shape)
    return x / jnp.linalg.norm(x, axis=0, keepdims=True)


def embeddings_weights_labels(batch, dim, classes, seed=0):
    k_e, k_w, k_y = jax.random.split(jax.random.key(seed), 3)
    return (unit_rows(k_e, (batch, dim)), unit_columns(k_w, (dim, classes)),
            jax.random.randint(k_y, (batch,), 0, classes))


@functools.partial(jax.jit, static_argnames=("kind", "scale", "margin"))
def loss_and_grad(cos, labels, *, kind, scale=SCALE, margin=MARGIN):
    def total(c):
        return ms.margin_softmax_loss(c, labels, kind=kind, scale=scale, margin=margin).sum()
    return ms.margin_softmax_loss(cos, labels, kind=kind, scale=scale, margin=margin), \
        jax.grad(total)(cos)


# ----------------------------------------------------------------------------------------
# Dense loss: hand-computed values.


# ψ written out by hand from each formula (c⁴, c² computed on paper; sin/cos of m = 0.35 and
# of the angles left to `math`).
SIN_M, COS_M = math.sin(MARGIN), math.cos(MARGIN)
HAND_PSI = {
    # c = 0.8 (sin θ = 0.6): cos 4θ = 8·0.4096 − 8·0.64 + 1 = −0.8432.
    0.8: {"softmax": 0.8, "am": 0.45, "simpler_a": -0.8432, "arcface": 0.8 * COS_M - 0.6 * SIN_M},
    # c = 0.9: cos 4θ = 8·0.6561 − 8·0.81 + 1 = −0.2312.
    0.9: {"softmax": 0.9, "am": 0.55, "simpler_a": -0.2312,
          "arcface": 0.9 * COS_M - math.sqrt(0.19) * SIN_M},
    # c = −0.99: θ ≈ 3.0 rad > π − m, so ArcFace falls back to c − m·sin m; cos 4θ = 0.84397
    # > c, so simpler-A keeps c.
    -0.99: {"softmax": -0.99, "am": -1.34, "simpler_a": -0.99, "arcface": -0.99 - MARGIN * SIN_M},
}


@pytest.mark.parametrize("kind", ms.KINDS)
@pytest.mark.parametrize("scale", [SCALE, 4.0])
def test_two_class_losses_match_hand_computed_values(kind, scale):
    # Two classes: L = log(1 + exp(s·(cos_other − ψ_t))).
    cos = jnp.array([[0.8, 0.3], [-0.5, 0.9], [-0.99, -0.2]], jnp.float32)
    labels = jnp.array([0, 1, 0])
    rows = [(0.8, 0.3), (0.9, -0.5), (-0.99, -0.2)]  # (target cos, other cos)
    expected = [math.log1p(math.exp(scale * (other - HAND_PSI[target][kind])))
                for target, other in rows]
    loss, _ = loss_and_grad(cos, labels, kind=kind, scale=scale)
    # float32 rounding of the inputs and of ψ moves s·(cos_other − ψ) by ~s·1e-7.
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_hand_psi_table_agrees_with_the_angle_formulas():
    # Guards the hand-written table above against typos.
    for c, by_kind in HAND_PSI.items():
        for kind, value in by_kind.items():
            assert value == pytest.approx(psi_by_angle(c, kind), abs=1e-12), (c, kind)


@pytest.mark.parametrize("kind", ms.KINDS)
def test_margin_logits_replace_only_the_target_entry(kind):
    cos = jax.random.uniform(jax.random.key(1), (4, 5), minval=-0.95, maxval=0.95)
    labels = jnp.array([0, 4, 2, 2])
    logits = jax.jit(functools.partial(ms.margin_logits, kind=kind))(cos, labels)
    expected = SCALE * np.asarray(cos, np.float64)
    for b, t in enumerate(labels.tolist()):
        expected[b, t] = SCALE * psi_by_angle(float(cos[b, t]), kind)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert logits.dtype == jnp.float32


def test_margin_logits_keep_bfloat16_and_the_loss_is_float32():
    cos = jax.random.uniform(jax.random.key(2), (3, 6), minval=-1, maxval=1).astype(jnp.bfloat16)
    labels = jnp.array([1, 0, 5])
    assert ms.margin_logits(cos, labels, kind="am").dtype == jnp.bfloat16
    loss, grad = loss_and_grad(cos, labels, kind="am")
    assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
    # Computed in float32 from the bfloat16 values: identical to the float32 loss on them.
    expected, _ = loss_and_grad(cos.astype(jnp.float32), labels, kind="am")
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ms.KINDS)
def test_fast_loss_matches_reference_values_and_gradients(kind):
    k_c, k_y = jax.random.split(jax.random.key(3))
    cos = jax.random.uniform(k_c, (8, 13), minval=-0.95, maxval=0.95)
    labels = jax.random.randint(k_y, (8,), 0, 13)
    reference = jax.jit(jax.value_and_grad(
        lambda c: ms.reference_margin_softmax_loss(c, labels, kind=kind).sum()))
    ref_value, ref_grad = reference(cos)
    loss, grad = loss_and_grad(cos, labels, kind=kind)
    np.testing.assert_allclose(loss.sum(), ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ms.KINDS)
def test_gradients_match_finite_differences(kind):
    # Target cosines away from every kink: simpler-A switches branch at cos θ ∈ {0.309,
    # −0.5, −0.809}, ArcFace at −cos m = −0.939; −0.97 exercises ArcFace's fallback.
    with jax.enable_x64(True):
        target = jnp.array([0.9, 0.6, 0.1, -0.3, -0.7, -0.97])
        others = jax.random.uniform(jax.random.key(4), (6, 5), jnp.float64, -0.9, 0.9)
        labels = jnp.array([0, 1, 2, 3, 4, 5])
        cos = jnp.concatenate([target[:, None], others], axis=1)
        cos = jax.vmap(jnp.roll)(cos, labels)  # row b has its target cosine in column b
        loss = jax.jit(lambda c: ms.margin_softmax_loss(c, labels, kind=kind, scale=4.0))
        check_grads(loss, (cos,), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_out_of_range_labels_give_nan_loss_only_on_their_row():
    cos = jnp.zeros((3, 4))
    loss, _ = loss_and_grad(cos, jnp.array([0, 4, -1]), kind="am")
    assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2])


# ----------------------------------------------------------------------------------------
# Finiteness for every θ in [0, π], cos exactly ±1 and 0 included.

COSINES = st.one_of(st.sampled_from([-1.0, 0.0, 1.0]),
                    st.floats(-1.0, 1.0, allow_nan=False, width=32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kind", ms.KINDS)
@settings(max_examples=30, deadline=None)
@given(cos=st.lists(COSINES, min_size=12, max_size=12),
       labels=st.lists(st.integers(0, 3), min_size=3, max_size=3))
def test_values_and_gradients_are_finite_for_every_angle(kind, dtype, cos, labels):
    cos = jnp.asarray(np.reshape(cos, (3, 4)), dtype)
    labels = jnp.asarray(labels)
    loss, grad = loss_and_grad(cos, labels, kind=kind)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(np.asarray(grad, np.float32)))
    # ψ ≤ cos θ for every kind, so no margin loss is below the plain scaled softmax loss.
    plain, _ = loss_and_grad(cos, labels, kind="softmax")
    assert np.all(loss >= plain - 1e-4)


def test_simpler_a_at_45_degrees_is_finite_where_the_seed_trick_is_not():
    # docs/sentence_similarity.md §3: θ_t = 45° gives ψ_t = cos 180° = −1 while
    # cos θ_t ≈ 0.707; with every other class at cos = −1, all logits but the unmargined
    # target are −30 and the true loss is exactly log(C).
    classes = 10
    cos = jnp.full((1, classes), -1.0, jnp.float32).at[0, 0].set(math.cos(math.pi / 4))
    labels = jnp.array([0])

    @jax.jit
    def seed_trick(cos):  # the seed's subtract-back trick, for contrast
        cos_t = cos[0, 0]
        psi_t = jnp.minimum(8 * cos_t**4 - 8 * cos_t**2 + 1, cos_t)
        log_z = jax.nn.logsumexp(jnp.append(SCALE * cos[0], SCALE * psi_t))
        log_z = log_z + jnp.log(1 - jnp.exp(SCALE * cos_t - log_z))
        return log_z - SCALE * psi_t

    assert not np.isfinite(seed_trick(cos))
    loss, grad = loss_and_grad(cos, labels, kind="simpler_a")
    np.testing.assert_allclose(loss, [math.log(classes)], rtol=1e-5)
    assert np.all(np.isfinite(grad))


def test_arcface_gradient_is_finite_at_zero_angle():
    # d cos(θ + m)/d cos θ is infinite at cos θ = 1 analytically; the kernel caps it.
    cos = jnp.array([[1.0, 0.0]])
    _, grad = loss_and_grad(cos, jnp.array([0]), kind="arcface")
    assert np.all(np.isfinite(grad)) and grad[0, 0] < 0


# ----------------------------------------------------------------------------------------
# Argument checks.


def test_bad_arguments_raise_value_errors_naming_them():
    cos, labels = jnp.zeros((3, 4)), jnp.zeros((3,), jnp.int32)
    with pytest.raises(ValueError, match="simpler_a.*arcface"):
        ms.margin_softmax_loss(cos, labels, kind="cosface")
    with pytest.raises(ValueError, match=r"\(2,\).*\(3, 4\)|\(3, 4\).*\(2,\)"):
        ms.margin_softmax_loss(cos, labels[:2], kind="am")
    with pytest.raises(ValueError, match="integer"):
        ms.margin_logits(cos, labels.astype(jnp.float32), kind="am")
    with pytest.raises(ValueError, match="scale"):
        ms.margin_softmax_loss(cos, labels, kind="am", scale=0.0)
    embeddings, weights = jnp.zeros((3, 8)), jnp.zeros((7, 20))
    with pytest.raises(ValueError, match=r"\(7, 20\)"):
        ms.chunked_margin_softmax_loss(embeddings, weights, labels, kind="am")
    with pytest.raises(ValueError, match="chunk_size"):
        ms.chunked_margin_softmax_loss(embeddings, jnp.zeros((8, 20)), labels, kind="am",
                                       chunk_size=0)
    with pytest.raises(ValueError, match="num_sampled"):
        ms.sample_classes(labels, 20, 2, jax.random.key(0))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    with pytest.raises(ValueError, match="'classes'"):
        ms.sharded_margin_softmax_loss(embeddings, jnp.zeros((8, 20)), labels, mesh=mesh,
                                       axis_name="classes", kind="am")


# ----------------------------------------------------------------------------------------
# Chunked loss.


def dense_loss_of_embeddings(embeddings, weights, labels, kind):
    cos = jnp.matmul(embeddings, weights, preferred_element_type=jnp.float32)
    return ms.margin_softmax_loss(cos, labels, kind=kind)


@pytest.mark.parametrize("kind, chunk_size", [(kind, 8) for kind in ms.KINDS]
                         + [("am", 37), ("am", 64)])  # ragged, exact and oversized chunks
def test_chunked_loss_equals_dense_loss_values_and_gradients(kind, chunk_size):
    embeddings, weights, labels = embeddings_weights_labels(6, 8, 37)  # 37 = 4·8 + 5

    def value_and_grads(loss_fn):
        return jax.jit(jax.value_and_grad(lambda e, w: loss_fn(e, w).sum(), (0, 1)))(
            embeddings, weights)

    dense = value_and_grads(lambda e, w: dense_loss_of_embeddings(e, w, labels, kind))
    chunked = value_and_grads(lambda e, w: ms.chunked_margin_softmax_loss(
        e, w, labels, kind=kind, chunk_size=chunk_size))
    np.testing.assert_allclose(chunked[0], dense[0], rtol=1e-6)
    for got, want in zip(chunked[1], dense[1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_chunked_loss_per_example_values_and_bfloat16_inputs():
    embeddings, weights, labels = embeddings_weights_labels(5, 16, 50, seed=1)
    e16, w16 = embeddings.astype(jnp.bfloat16), weights.astype(jnp.bfloat16)

    @jax.jit
    def loss_and_grads(e, w):
        def loss(e, w):
            return ms.chunked_margin_softmax_loss(e, w, labels, kind="arcface", chunk_size=16)
        return loss(e, w), jax.grad(lambda e, w: loss(e, w).sum(), (0, 1))(e, w)

    got, grads = loss_and_grads(e16, w16)
    # bfloat16 products are exact in float32 and the kernel accumulates in float32.
    want = dense_loss_of_embeddings(e16.astype(jnp.float32), w16.astype(jnp.float32), labels,
                                    "arcface")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert grads[0].dtype == grads[1].dtype == jnp.bfloat16


def test_chunked_gradients_match_finite_differences():
    with jax.enable_x64(True):
        k_e, k_w = jax.random.split(jax.random.key(5))
        embeddings = jax.random.normal(k_e, (3, 4), jnp.float64) / 2
        weights = jax.random.normal(k_w, (4, 11), jnp.float64) / 2
        labels = jnp.array([0, 10, 5])
        loss = jax.jit(lambda e, w: ms.chunked_margin_softmax_loss(
            e, w, labels, kind="am", scale=3.0, chunk_size=4))
        check_grads(loss, (embeddings, weights), order=1, modes=("rev",), eps=1e-6)


def test_chunked_loss_compiles_without_a_batch_by_classes_buffer():
    batch, dim, classes = 256, 16, 16384
    embeddings, weights, labels = embeddings_weights_labels(batch, dim, classes)
    logit_bytes = batch * classes * 4  # 16 MiB

    def temp_bytes(loss_fn):
        step = jax.jit(jax.value_and_grad(lambda e, w: loss_fn(e, w).mean(), (0, 1)))
        return step.lower(embeddings, weights).compile().memory_analysis().temp_size_in_bytes

    dense = temp_bytes(lambda e, w: dense_loss_of_embeddings(e, w, labels, "am"))
    chunked = temp_bytes(lambda e, w: ms.chunked_margin_softmax_loss(
        e, w, labels, kind="am", chunk_size=512))
    assert dense >= logit_bytes  # the measurement does see a (B, C) buffer when there is one
    assert chunked < logit_bytes / 8


# ----------------------------------------------------------------------------------------
# Partial-FC sampling.


def test_sampled_classes_hold_every_positive_once_and_remap_labels():
    labels = jnp.array([3, 17, 3, 42, 0, 17, 49, 8])
    sample = jax.jit(ms.sample_classes, static_argnums=(1, 2))
    seen = set()
    for seed in range(5):
        class_ids, remapped = sample(labels, 50, 12, jax.random.key(seed))
        ids = np.asarray(class_ids)
        assert ids.shape == (12,) and len(set(ids.tolist())) == 12
        assert np.all(np.diff(ids) > 0) and ids.min() >= 0 and ids.max() < 50
        assert set(labels.tolist()) <= set(ids.tolist())
        np.testing.assert_array_equal(ids[np.asarray(remapped)], labels)
        seen.add(tuple(ids.tolist()))
    assert len(seen) > 1  # the negatives depend on the key


def test_sampled_negatives_cover_every_class():
    # 4 of the 44 negatives per draw: over 300 keys each class is missed with p ≈ 3e-13.
    labels = jnp.arange(6)
    keys = jax.random.split(jax.random.key(6), 300)
    class_ids, _ = jax.jit(jax.vmap(lambda k: ms.sample_classes(labels, 50, 10, k)))(keys)
    assert set(np.asarray(class_ids).ravel().tolist()) == set(range(50))


def test_sampled_loss_with_every_class_equals_the_dense_loss():
    embeddings, weights, labels = embeddings_weights_labels(6, 8, 20, seed=2)
    key = jax.random.key(7)

    def sampled(num_sampled):
        return jax.jit(jax.value_and_grad(lambda e, w: ms.sampled_margin_softmax_loss(
            e, w, labels, key, num_sampled=num_sampled, kind="am").sum(), (0, 1)))(
                embeddings, weights)

    dense = jax.jit(jax.value_and_grad(
        lambda e, w: dense_loss_of_embeddings(e, w, labels, "am").sum(), (0, 1)))(
            embeddings, weights)
    every_class = sampled(20)
    np.testing.assert_allclose(every_class[0], dense[0], rtol=1e-6)
    for got, want in zip(every_class[1], dense[1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Fewer negatives, smaller softmax denominator: the sampled loss is a lower bound.
    assert sampled(8)[0] < dense[0]


# ----------------------------------------------------------------------------------------
# Sharded class centres: 8 fake CPU devices in a child process.

SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from kernels import margin_softmax as ms

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("model",))
    keys = jax.random.split(jax.random.key(0), 3)
    e = jax.random.normal(keys[0], (6, 8))
    e = e / jnp.linalg.norm(e, axis=1, keepdims=True)
    w = jax.random.normal(keys[1], (8, 40))
    w = w / jnp.linalg.norm(w, axis=0, keepdims=True)
    y = jnp.array([0, 39, 5, 5, 21, 12])  # first and last shard, a repeat

    def value_and_grads(loss_fn):
        out = jax.jit(jax.value_and_grad(lambda e, w: loss_fn(e, w).sum(), (0, 1)))(e, w)
        return jax.block_until_ready(out)  # sync every call (docs/index.md §4)

    for kind in ms.KINDS:
        dense = value_and_grads(lambda e, w: ms.margin_softmax_loss(e @ w, y, kind=kind))
        for chunk_size in (None, 3):
            sharded = value_and_grads(lambda e, w: ms.sharded_margin_softmax_loss(
                e, w, y, mesh=mesh, axis_name="model", kind=kind, chunk_size=chunk_size))
            np.testing.assert_allclose(sharded[0], dense[0], rtol=1e-6)
            for got, want in zip(sharded[1], dense[1]):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    try:
        ms.sharded_margin_softmax_loss(e, w[:, :36], y % 36, mesh=mesh, axis_name="model",
                                       kind="am")
    except ValueError as error:
        assert "divisible" in str(error), error
    else:
        raise AssertionError("36 classes over 8 devices did not raise")
    print("SHARDED OK")
""")


@pytest.mark.timeout(180)
def test_sharded_loss_equals_dense_loss_on_eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                        os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0 and "SHARDED OK" in result.stdout, result.stderr[-4000:]


# ----------------------------------------------------------------------------------------
# Unit-norm projection as an optax transformation.


def test_unit_norm_projection_after_adam_keeps_columns_unit_and_spares_masked_leaves():
    k_w, k_b, k_g = jax.random.split(jax.random.key(8), 3)
    params = {"classifier": {"kernel": unit_columns(k_w, (16, 30))},
              "encoder": {"bias": jax.random.normal(k_b, (16,))}}
    mask = {"classifier": {"kernel": True}, "encoder": {"bias": False}}
    projected = optax.chain(optax.adam(0.1), optax.masked(ms.project_to_unit_norm(), mask))
    plain = optax.adam(0.1)
    state, plain_state = projected.init(params), plain.init(params)
    update, plain_update = jax.jit(projected.update), jax.jit(plain.update)
    plain_params = params
    for step in range(3):
        step_key = jax.random.fold_in(k_g, step)
        grads = jax.tree.map(lambda p, key=step_key: jax.random.normal(key, p.shape), params)
        updates, state = update(grads, state, params)
        plain_updates, plain_state = plain_update(grads, plain_state, plain_params)
        # Adam's update does not depend on params, so both chains see the same Adam step u:
        # the projected kernel must be normalize(p + u), column by column.
        moved = params["classifier"]["kernel"] + plain_updates["classifier"]["kernel"]
        params = optax.apply_updates(params, updates)
        plain_params = optax.apply_updates(plain_params, plain_updates)
        np.testing.assert_allclose(params["classifier"]["kernel"],
                                   moved / jnp.linalg.norm(moved, axis=0), atol=1e-6)
        norms = jnp.linalg.norm(params["classifier"]["kernel"], axis=0)
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
        np.testing.assert_array_equal(params["encoder"]["bias"], plain_params["encoder"]["bias"])


def test_unit_norm_projection_is_the_normalised_update_and_needs_params():
    params = jnp.array([[3.0, 0.0], [4.0, 2.0]])
    updates = jnp.array([[0.0, 1.0], [0.0, -2.0]])  # columns move to (3, 4) and (1, 0)
    projection = ms.project_to_unit_norm(axis=0)
    projected, _ = projection.update(updates, projection.init(params), params)
    np.testing.assert_allclose(params + projected, [[0.6, 1.0], [0.8, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match="params"):
        projection.update(updates, projection.init(params))
