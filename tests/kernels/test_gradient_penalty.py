"""Tests for kernels/gradient_penalty.py against finite differences and closed forms."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import configs, gan, trainer
from experiments.gan import input_pipeline
from experiments.gan import train as gan_train
from kernels import gan_losses
from kernels import gradient_penalty as gp

STRATEGIES = gp.STRATEGIES
INTERPOLATING = gp.INTERPOLATING_STRATEGIES
SAMPLE_SHAPE = (2, 3)  # non-batch axes: norms must run over all of them
DIM = 6


def _flat(x):
    return x.reshape(x.shape[0], -1)


def linear_critic(w):
    """T(x)_b = ⟨w, x_b⟩: ∇ₓT = w at every point."""
    return lambda x: jnp.sum(_flat(x) * w.reshape(-1), axis=1)


def quadratic_critic(a):
    """T(x)_b = ½ x_bᵀ A x_b with A symmetric: ∇ₓT = A x_b."""
    return lambda x: 0.5 * jnp.einsum("bi,ij,bj->b", _flat(x), a, _flat(x))


def mlp_critic(w1, w2):
    """A small nonlinear critic with no cross-sample terms."""
    return lambda x: jnp.tanh(_flat(x) @ w1) @ w2 + 0.3 * jnp.sum(jnp.sin(_flat(x)), axis=1)


def batch_centring_critic(w1, w2):
    """Subtracts half the batch mean first, as batch norm would: scores couple samples."""

    def critic(x):
        centred = _flat(x) - 0.5 * jnp.mean(_flat(x), axis=0, keepdims=True)
        return jnp.tanh(centred @ w1) @ w2

    return critic


def random_batches(seed, batch=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x_real = rng.normal(size=(batch,) + SAMPLE_SHAPE).astype(dtype)
    x_fake = rng.normal(size=(batch,) + SAMPLE_SHAPE).astype(dtype)
    return x_real, x_fake


def mlp_weights(seed, hidden=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(DIM, hidden)) * 0.7, rng.normal(size=(hidden,))


def finite_difference_gradient(f, x, eps=1e-6):
    """Central differences of a scalar f at x (float64 numpy)."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (float(f(x + step)) - float(f(x - step))) / (2 * eps)
    return grad


def fd_norms_of_summed_scores(critic, x):
    grad = finite_difference_gradient(lambda y: jnp.sum(critic(jnp.asarray(y))), x)
    return np.linalg.norm(grad.reshape(grad.shape[0], -1), axis=1)


def fd_norms_per_sample(critic, x):
    norms = []
    for sample in np.asarray(x, dtype=np.float64):
        grad = finite_difference_gradient(lambda y: critic(jnp.asarray(y)[None])[0], sample)
        norms.append(np.linalg.norm(grad))
    return np.array(norms)


def jitted_norms(critic, per_sample=False):
    return jax.jit(functools.partial(gp.gradient_norms, critic, per_sample=per_sample))


def jitted_div(critic, **kwargs):
    return jax.jit(functools.partial(gp.wgan_div_penalty, critic, **kwargs))


@functools.cache
def jitted_points(strategy):
    return jax.jit(functools.partial(gp.penalty_points, strategy=strategy))


# ----------------------------------------------------------------------------------------
# gradient_norms against finite differences.


def test_gradient_norms_match_finite_differences():
    with jax.enable_x64(True):
        critic = mlp_critic(*mlp_weights(0))
        x, _ = random_batches(1, batch=3, dtype=np.float64)
        norms = jitted_norms(critic)(x)
        assert norms.dtype == jnp.float64
        np.testing.assert_allclose(norms, fd_norms_of_summed_scores(critic, x), rtol=1e-7)
        # Without cross-sample terms, the per-sample gradient is the same.
        np.testing.assert_allclose(jitted_norms(critic, True)(x), norms, rtol=1e-10)


def test_batch_coupled_critic_per_sample_differs_and_both_match_finite_differences():
    with jax.enable_x64(True):
        critic = batch_centring_critic(*mlp_weights(2))
        x, _ = random_batches(3, batch=3, dtype=np.float64)
        summed = jitted_norms(critic)(x)
        per_sample = jitted_norms(critic, per_sample=True)(x)
        np.testing.assert_allclose(summed, fd_norms_of_summed_scores(critic, x), rtol=1e-7)
        np.testing.assert_allclose(per_sample, fd_norms_per_sample(critic, x), rtol=1e-7)
        assert np.min(np.abs(summed - per_sample) / per_sample) > 1e-3


# ----------------------------------------------------------------------------------------
# Closed forms: a linear critic has ‖∇T‖ = ‖w‖ at every point.

K_P = [(2.0, 6.0), (1.0, 1.5), (0.5, 2.0), (3.0, 3.0)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k,p", K_P)
def test_linear_critic_wgan_div_is_k_times_norm_w_to_the_p(strategy, k, p):
    w = np.random.default_rng(4).normal(size=SAMPLE_SHAPE).astype(np.float32) * 0.5
    x_real, x_fake = random_batches(5)
    penalty = jitted_div(linear_critic(jnp.asarray(w)), k=k, p=p, strategy=strategy)(
        x_real, x_fake, key=jax.random.key(0)
    )
    assert penalty.shape == () and penalty.dtype == jnp.float32
    expected = k * np.linalg.norm(w.astype(np.float64)) ** p
    np.testing.assert_allclose(penalty, expected, rtol=2e-5)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.floats(0.05, 5.0),
    p=st.floats(1.05, 8.0),
    scale=st.floats(0.2, 1.5),
    strategy=st.sampled_from(STRATEGIES),
)
def test_linear_critic_wgan_div_property(seed, k, p, scale, strategy):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=SAMPLE_SHAPE) * scale / np.sqrt(DIM)).astype(np.float32)
    x_real, x_fake = random_batches(seed + 1, batch=4)
    penalty = jitted_div(linear_critic(jnp.asarray(w)), k=k, p=p, strategy=strategy)(
        x_real, x_fake, key=jax.random.key(seed)
    )
    np.testing.assert_allclose(
        penalty, k * np.linalg.norm(w.astype(np.float64)) ** p, rtol=5e-5
    )


@pytest.mark.parametrize("p", [6.0, 1.5, 2.0])
@pytest.mark.parametrize("strategy", ["real_and_fake", "real_fake_interpolation"])
def test_linear_critic_penalty_gradient_wrt_weights_closed_form(p, strategy):
    # d/dw k‖w‖^p = k·p·‖w‖^{p−2}·w: a closed-form check of the double backward pass.
    k = 2.0
    w = np.random.default_rng(6).normal(size=SAMPLE_SHAPE).astype(np.float32) * 0.5
    x_real, x_fake = random_batches(7)

    def penalty(weights, x_real, x_fake, key):
        return gp.wgan_div_penalty(
            linear_critic(weights), x_real, x_fake, k=k, p=p, strategy=strategy, key=key
        )

    grad = jax.jit(jax.grad(penalty))(jnp.asarray(w), x_real, x_fake, jax.random.key(1))
    w64 = w.astype(np.float64)
    expected = k * p * np.linalg.norm(w64) ** (p - 2) * w64
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("center", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("strategy", ["real_fake_interpolation", "real_and_fake"])
def test_linear_critic_wgan_gp_closed_form(center, strategy):
    w = np.random.default_rng(8).normal(size=SAMPLE_SHAPE).astype(np.float32) * 0.3
    x_real, x_fake = random_batches(9)
    penalty = jax.jit(
        functools.partial(
            gp.wgan_gp_penalty, linear_critic(jnp.asarray(w)), weight=7.0, center=center,
            strategy=strategy,
        )
    )(x_real, x_fake, jax.random.key(2))
    expected = 7.0 * (np.linalg.norm(w.astype(np.float64)) - center) ** 2
    np.testing.assert_allclose(penalty, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("penalty_fn", [gp.r1_penalty, gp.r2_penalty])
def test_linear_critic_zero_centred_penalties(penalty_fn):
    w = np.random.default_rng(10).normal(size=SAMPLE_SHAPE).astype(np.float32)
    x, _ = random_batches(11)
    penalty = jax.jit(functools.partial(penalty_fn, linear_critic(jnp.asarray(w)), weight=3.0))(x)
    np.testing.assert_allclose(penalty, 1.5 * np.sum(w.astype(np.float64) ** 2), rtol=1e-5)


# ----------------------------------------------------------------------------------------
# Closed forms: a quadratic critic has ∇T(x) = A x.


def symmetric_matrix(seed):
    m = np.random.default_rng(seed).normal(size=(DIM, DIM)) * 0.4
    return ((m + m.T) / 2).astype(np.float32)


def mean_power_of_ax(a, points, p):
    flat = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    return np.mean(np.linalg.norm(flat @ a.astype(np.float64).T, axis=1) ** p)


@pytest.mark.parametrize("p", [6.0, 1.5])
def test_quadratic_critic_on_the_raw_batches(p):
    a = symmetric_matrix(12)
    x_real, x_fake = random_batches(13, batch=6)
    critic = quadratic_critic(jnp.asarray(a))
    on_real, on_fake = mean_power_of_ax(a, x_real, p), mean_power_of_ax(a, x_fake, p)
    expected = {
        "real_and_fake": 2.0 * 0.5 * (on_real + on_fake),
        "real": 2.0 * on_real,
        "fake": 2.0 * on_fake,
    }
    for strategy, value in expected.items():
        penalty = jitted_div(critic, p=p, strategy=strategy)(x_real, x_fake)
        np.testing.assert_allclose(penalty, value, rtol=5e-5, err_msg=strategy)


@pytest.mark.parametrize("strategy", INTERPOLATING)
def test_quadratic_critic_on_the_sampled_points(strategy):
    a = symmetric_matrix(14)
    x_real, x_fake = random_batches(15, batch=6)
    critic = quadratic_critic(jnp.asarray(a))
    key = jax.random.key(3)
    points = jitted_points(strategy)(x_real, x_fake, key=key)
    penalty = jitted_div(critic, k=1.5, p=6.0, strategy=strategy)(x_real, x_fake, key=key)
    np.testing.assert_allclose(penalty, 1.5 * mean_power_of_ax(a, points, 6.0), rtol=5e-5)

    gp_value = jax.jit(
        functools.partial(gp.wgan_gp_penalty, critic, weight=10.0, center=1.0, strategy=strategy)
    )(x_real, x_fake, key)
    flat = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    gp_expected = 10.0 * np.mean((np.linalg.norm(flat @ a.T.astype(np.float64), axis=1) - 1) ** 2)
    np.testing.assert_allclose(gp_value, gp_expected, rtol=5e-5)


def test_quadratic_critic_r1_r2():
    a = symmetric_matrix(16)
    x_real, x_fake = random_batches(17, batch=6)
    critic = quadratic_critic(jnp.asarray(a))
    r1 = jax.jit(functools.partial(gp.r1_penalty, critic, weight=4.0))(x_real)
    r2 = jax.jit(functools.partial(gp.r2_penalty, critic, weight=4.0))(x_fake)
    np.testing.assert_allclose(r1, 2.0 * mean_power_of_ax(a, x_real, 2.0), rtol=2e-5)
    np.testing.assert_allclose(r2, 2.0 * mean_power_of_ax(a, x_fake, 2.0), rtol=2e-5)


# ----------------------------------------------------------------------------------------
# penalty_points: the r(x) strategies put their points where docs/wgan_div.md §2.3 says.


def fit_segment(point, start, end):
    """(t, distance) of the closest point to `point` on the segment start→end."""
    direction = end - start
    t = np.clip(np.dot(point - start, direction) / np.dot(direction, direction), 0.0, 1.0)
    return t, np.linalg.norm(start + t * direction - point)


def best_pair(point, candidates):
    """The unordered pair (i, j), i ≠ j, whose segment passes closest to `point`.

    The point must not be one of the candidates itself (a sample "interpolated" with
    itself, or t ∈ {0, 1}), which would lie on every segment from it.
    """
    assert np.min(np.linalg.norm(candidates - point, axis=1)) > 1e-3
    fits = [
        (fit_segment(point, candidates[i], candidates[j])[1], (i, j))
        for i, j in itertools.combinations(range(len(candidates)), 2)
    ]
    return min(fits)


def get_points(strategy, x_real, x_fake, key):
    points = jitted_points(strategy)(x_real, x_fake, key=key)
    return np.asarray(points, dtype=np.float64).reshape(len(points), -1)


def test_real_fake_interpolation_points_lie_between_paired_samples():
    x_real, x_fake = random_batches(18, batch=16)
    points = get_points("real_fake_interpolation", x_real, x_fake, jax.random.key(4))
    real, fake = _flat(x_real).astype(np.float64), _flat(x_fake).astype(np.float64)
    assert points.shape == real.shape
    fits = [fit_segment(points[i], fake[i], real[i]) for i in range(16)]
    ts = np.array([t for t, _ in fits])
    assert max(d for _, d in fits) < 1e-5
    assert np.std(ts) > 0.1  # one t per sample, spread over (0, 1)


def test_real_real_and_fake_fake_points_pair_distinct_members_of_one_population():
    x_real, x_fake = random_batches(19, batch=6)
    points = get_points("real_real_and_fake_fake_interpolation", x_real, x_fake, jax.random.key(5))
    assert points.shape == (12, DIM)
    for half, population in ((points[:6], x_real), (points[6:], x_fake)):
        population = _flat(population).astype(np.float64)
        for point in half:
            distance, (i, j) = best_pair(point, population)
            assert distance < 1e-5 and i != j


def test_mixed_pairs_points_use_every_real_and_fake_sample_once():
    x_real, x_fake = random_batches(20, batch=6)
    points = get_points("mixed_pairs_interpolation", x_real, x_fake, jax.random.key(6))
    pool = np.concatenate([_flat(x_real), _flat(x_fake)]).astype(np.float64)
    assert points.shape == (6, DIM)
    endpoints = []
    for point in points:
        distance, pair = best_pair(point, pool)
        assert distance < 1e-5
        endpoints.extend(pair)
    assert sorted(endpoints) == list(range(12))


def test_raw_strategies_return_the_batches():
    x_real, x_fake = random_batches(21)
    np.testing.assert_array_equal(gp.penalty_points(x_real, x_fake, "real", None), x_real)
    np.testing.assert_array_equal(gp.penalty_points(x_real, x_fake, "fake", None), x_fake)
    np.testing.assert_array_equal(
        gp.penalty_points(x_real, x_fake, "real_and_fake", None),
        np.concatenate([x_real, x_fake]),
    )


@pytest.mark.parametrize("strategy", INTERPOLATING)
def test_sampled_points_follow_the_key(strategy):
    x_real, x_fake = random_batches(22)
    first = get_points(strategy, x_real, x_fake, jax.random.key(7))
    np.testing.assert_array_equal(first, get_points(strategy, x_real, x_fake, jax.random.key(7)))
    assert not np.allclose(first, get_points(strategy, x_real, x_fake, jax.random.key(8)))


# ----------------------------------------------------------------------------------------
# Batch statistics: two-population strategies call the critic once per population.


@pytest.mark.parametrize(
    "strategy,expected_batches",
    [
        ("real_and_fake", [5, 5]),
        ("real_real_and_fake_fake_interpolation", [5, 5]),
        ("real_fake_interpolation", [5]),
        ("mixed_pairs_interpolation", [5]),
        ("real", [5]),
        ("fake", [5]),
    ],
)
def test_critic_called_once_per_population(strategy, expected_batches):
    seen = []

    def recording_critic(x):
        seen.append(x.shape[0])
        return jnp.sum(_flat(x) ** 2, axis=1)

    x_real, x_fake = random_batches(23)
    jitted_div(recording_critic, strategy=strategy)(x_real, x_fake, key=jax.random.key(9))
    assert seen == expected_batches


def test_real_and_fake_keeps_separate_batch_statistics():
    critic = batch_centring_critic(*(w.astype(np.float32) for w in mlp_weights(24)))
    x_real, x_fake = random_batches(25)
    penalty = jitted_div(critic, k=2.0, p=6.0)(x_real, x_fake)
    norms = jitted_norms(critic)
    separate = 2.0 * 0.5 * (np.mean(norms(x_real) ** 6.0) + np.mean(norms(x_fake) ** 6.0))
    joint = 2.0 * np.mean(norms(np.concatenate([x_real, x_fake])) ** 6.0)
    np.testing.assert_allclose(penalty, separate, rtol=1e-4)
    assert abs(penalty - joint) > 1e-2 * abs(joint)


# ----------------------------------------------------------------------------------------
# The zero-gradient point: a constant critic.


def scaled_critic(theta, v):
    """θ·tanh(⟨v, x⟩): constant (zero input gradient everywhere) at θ = 0."""
    return lambda x: theta * jnp.tanh(_flat(x) @ v)


PENALTIES_AT_ZERO = {
    "div_p6": (lambda c, xr, xf, key: gp.wgan_div_penalty(c, xr, xf, p=6.0), 0.0),
    "div_p1.5": (lambda c, xr, xf, key: gp.wgan_div_penalty(c, xr, xf, p=1.5), 0.0),
    "div_p2_interpolated": (
        lambda c, xr, xf, key: gp.wgan_div_penalty(
            c, xr, xf, p=2.0, strategy="real_fake_interpolation", key=key
        ),
        0.0,
    ),
    "gp_center1": (lambda c, xr, xf, key: gp.wgan_gp_penalty(c, xr, xf, key), 10.0),
    "gp_center0": (lambda c, xr, xf, key: gp.wgan_gp_penalty(c, xr, xf, key, center=0.0), 0.0),
    "r1": (lambda c, xr, xf, key: gp.r1_penalty(c, xr, weight=10.0), 0.0),
    "norms": (lambda c, xr, xf, key: jnp.sum(gp.gradient_norms(c, xr)), 0.0),
}


@pytest.mark.parametrize("name", PENALTIES_AT_ZERO)
def test_constant_critic_gives_finite_zero_gradients(name):
    penalty_fn, expected_value = PENALTIES_AT_ZERO[name]
    v = jnp.asarray(np.random.default_rng(26).normal(size=DIM).astype(np.float32))
    x_real, x_fake = random_batches(27)

    def penalty(theta, x_real, x_fake):
        return penalty_fn(scaled_critic(theta, v), x_real, x_fake, jax.random.key(10))

    value, (d_theta, d_real, d_fake) = jax.jit(jax.value_and_grad(penalty, argnums=(0, 1, 2)))(
        jnp.float32(0.0), x_real, x_fake
    )
    np.testing.assert_allclose(value, expected_value, atol=1e-12)
    for grad in (d_theta, d_real, d_fake):
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("p", [1.5, 6.0])
def test_penalty_gradient_wrt_critic_parameters_matches_finite_differences(p):
    with jax.enable_x64(True):
        w1, w2 = mlp_weights(28)
        x_real, x_fake = random_batches(29, batch=3, dtype=np.float64)
        key = jax.random.key(11)

        def penalty(w1):
            return gp.wgan_div_penalty(
                mlp_critic(w1, w2), x_real, x_fake, k=2.0, p=p,
                strategy="real_fake_interpolation", key=key,
            )

        grad = jax.jit(jax.grad(penalty))(w1)
        expected = finite_difference_gradient(jax.jit(penalty), w1)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------
# bfloat16 inputs: float32 accumulation and results.


def test_bfloat16_inputs_accumulate_in_float32():
    # Σ g² = 4097 has no bfloat16 representation (neighbours 4096 and 4112): a bfloat16
    # accumulator or result cannot give it exactly.
    n = 4097
    w = jnp.ones((n,), jnp.bfloat16)
    critic = lambda x: x @ w  # noqa: E731
    rng = np.random.default_rng(30)
    x_real = jnp.asarray(rng.normal(size=(4, n)), jnp.bfloat16)
    x_fake = jnp.asarray(rng.normal(size=(4, n)), jnp.bfloat16)
    key = jax.random.key(12)

    p2 = jitted_div(critic, k=1.0, p=2.0)(x_real, x_fake)
    assert p2.dtype == jnp.float32 and float(p2) == 4097.0
    p6 = jitted_div(critic, k=2.0, p=6.0, strategy="mixed_pairs_interpolation")(
        x_real, x_fake, key=key
    )
    np.testing.assert_allclose(p6, 2.0 * 4097.0**3, rtol=1e-6)
    norms = jitted_norms(critic)(x_real)
    assert norms.dtype == jnp.float32
    np.testing.assert_allclose(norms, np.sqrt(4097.0), rtol=1e-6)
    gp_value = jax.jit(functools.partial(gp.wgan_gp_penalty, critic))(x_real, x_fake, key)
    assert gp_value.dtype == jnp.float32
    np.testing.assert_allclose(gp_value, 10.0 * (np.sqrt(4097.0) - 1.0) ** 2, rtol=1e-5)
    points = gp.penalty_points(x_real, x_fake, "real_fake_interpolation", key)
    assert points.dtype == jnp.bfloat16


# ----------------------------------------------------------------------------------------
# Bad input.


def _args():
    x_real, x_fake = random_batches(31)
    return linear_critic(jnp.ones(SAMPLE_SHAPE)), x_real, x_fake


@pytest.mark.parametrize("p", [1.0, 0.5, -2.0])
def test_p_at_most_one_is_rejected(p):
    critic, x_real, x_fake = _args()
    with pytest.raises(ValueError, match="p must be > 1"):
        gp.wgan_div_penalty(critic, x_real, x_fake, p=p)


@pytest.mark.parametrize("k", [0.0, -1.0])
def test_k_not_positive_is_rejected(k):
    critic, x_real, x_fake = _args()
    with pytest.raises(ValueError, match="k must be > 0"):
        gp.wgan_div_penalty(critic, x_real, x_fake, k=k)


def test_traced_k_is_rejected():
    critic, x_real, x_fake = _args()
    with pytest.raises(ValueError, match="k must be a concrete number"):
        jax.jit(lambda k: gp.wgan_div_penalty(critic, x_real, x_fake, k=k))(2.0)


def test_unknown_strategy_lists_the_valid_ones():
    critic, x_real, x_fake = _args()
    with pytest.raises(ValueError, match="unknown strategy 'interpolate'") as error:
        gp.wgan_div_penalty(critic, x_real, x_fake, strategy="interpolate")
    assert all(name in str(error.value) for name in STRATEGIES)
    with pytest.raises(ValueError, match="unknown strategy"):
        gp.penalty_points(x_real, x_fake, "interpolate", None)


def test_shape_mismatch_names_both_shapes():
    critic, x_real, _ = _args()
    x_fake = np.zeros((4, 2, 3), np.float32)
    message = r"x_real \(5, 2, 3\) and x_fake \(4, 2, 3\)"
    for call in (
        lambda: gp.wgan_div_penalty(critic, x_real, x_fake),
        lambda: gp.wgan_gp_penalty(critic, x_real, x_fake, jax.random.key(0)),
        lambda: gp.penalty_points(x_real, x_fake, "real", None),
    ):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("strategy", INTERPOLATING)
def test_sampling_strategy_without_key_is_rejected(strategy):
    critic, x_real, x_fake = _args()
    with pytest.raises(ValueError, match="needs a key"):
        gp.wgan_div_penalty(critic, x_real, x_fake, strategy=strategy)
    with pytest.raises(ValueError, match="needs a key"):
        gp.wgan_gp_penalty(critic, x_real, x_fake, None, strategy=strategy)


def test_critic_with_wrong_score_shape_is_rejected():
    _, x_real, x_fake = _args()
    with pytest.raises(ValueError, match=r"scores of shape \(5,\), got \(5, 1\)"):
        gp.wgan_div_penalty(lambda x: _flat(x)[:, :1], x_real, x_fake)


def test_bad_batches_and_weights_are_rejected():
    critic, x_real, x_fake = _args()
    with pytest.raises(ValueError, match="floating point"):
        gp.gradient_norms(critic, np.ones((5, 2, 3), np.int32))
    with pytest.raises(ValueError, match="batch >= 1"):
        gp.r1_penalty(critic, np.ones((0, 2, 3), np.float32), weight=1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        gp.r2_penalty(critic, x_fake, weight=-1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        gp.wgan_gp_penalty(critic, x_real, x_fake, jax.random.key(0), weight=-10.0)


# ----------------------------------------------------------------------------------------
# Penalty and critic_scores_and_penalty: the shared forward is the separate-call function.

# Each kind's public function, independent of `Penalty`: the reference below.
PUBLIC_PENALTIES = {
    "wgan_div": lambda c, xr, xf, key, s: gp.wgan_div_penalty(
        c, xr, xf, k=2.0, p=6.0, strategy=s, key=key),
    "wgan_gp": lambda c, xr, xf, key, s: gp.wgan_gp_penalty(
        c, xr, xf, key, weight=10.0, center=1.0, strategy=s),
    "r1": lambda c, xr, xf, key, s: gp.r1_penalty(c, xr, weight=3.0),
    "r2": lambda c, xr, xf, key, s: gp.r2_penalty(c, xf, weight=3.0),
    "none": lambda c, xr, xf, key, s: jnp.zeros((), jnp.float32),
}
PENALTY_CASES = [("wgan_div", s) for s in STRATEGIES] + [
    ("wgan_gp", "real_fake_interpolation"), ("wgan_gp", "real_and_fake"),
    ("r1", "real_and_fake"), ("r2", "real_and_fake"), ("none", "real_and_fake")]


def penalty_of(kind, strategy):
    return gp.Penalty(kind=kind, k=2.0, p=6.0, weight=10.0 if kind == "wgan_gp" else 3.0,
                      center=1.0, strategy=strategy)


def stateful_centring_critic(w1, w2, reads_state=False):
    """`batch_centring_critic` carrying a moving average of the batch mean, as batch norm
    does: its scores ignore the state. With ``reads_state`` they are divided by
    (1 + calls so far), as spectral norm's scores depend on its stored vector."""

    def critic(x, state):
        batch_mean = jnp.mean(_flat(x), axis=0)
        centred = _flat(x) - 0.5 * batch_mean
        scores = jnp.tanh(centred @ w1) @ w2
        if reads_state:
            scores = scores / (1.0 + state["calls"])
        return scores, {"mean": 0.9 * state["mean"] + 0.1 * batch_mean,
                        "calls": state["calls"] + 1.0}

    return critic


def initial_state():
    return {"mean": jnp.zeros(DIM), "calls": jnp.zeros(())}


def separate_calls(critic, state, x_real, x_fake, kind, strategy, key):
    """The reference: both batches scored, then the penalty by its own calls at the final
    state (what the GAN experiment computed before the shared forward)."""
    real_scores, state = critic(x_real, state)
    fake_scores, state = critic(x_fake, state)
    final = state
    penalty = PUBLIC_PENALTIES[kind](lambda x: critic(x, final)[0], x_real, x_fake, key,
                                     strategy)
    return real_scores, fake_scores, penalty, state


def loss_terms(terms_fn, reads_state=False):
    """(w1, w2) → the Wasserstein critic loss plus penalty, with the terms as aux."""

    def loss(w1, w2, x_real, x_fake, key):
        real, fake, penalty, state = terms_fn(
            stateful_centring_critic(w1, w2, reads_state), initial_state(), x_real, x_fake,
            key)
        return jnp.mean(fake) - jnp.mean(real) + penalty, (real, fake, penalty, state)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize("kind, strategy", PENALTY_CASES)
def test_penalty_object_is_the_public_function_of_its_kind(kind, strategy):
    critic = batch_centring_critic(*(w.astype(np.float32) for w in mlp_weights(30)))
    x_real, x_fake = random_batches(31)
    key = jax.random.key(32)
    got = penalty_of(kind, strategy)(critic, x_real, x_fake, key)
    want = PUBLIC_PENALTIES[kind](critic, x_real, x_fake, key, strategy)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert kind == "none" or float(want) > 0


@pytest.mark.parametrize("kind, strategy", PENALTY_CASES)
def test_shared_forward_equals_separate_calls_values_and_gradients(kind, strategy):
    w1, w2 = (jnp.asarray(w, jnp.float32) for w in mlp_weights(33))
    x_real, x_fake = random_batches(34)
    key = jax.random.key(35)
    penalty = penalty_of(kind, strategy)
    (loss, terms), grads = loss_terms(
        lambda *args: gp.critic_scores_and_penalty(*args[:4], penalty, args[4]))(
        w1, w2, x_real, x_fake, key)
    (want_loss, want_terms), want_grads = loss_terms(
        lambda *args: separate_calls(*args[:4], kind, strategy, args[4]))(
        w1, w2, x_real, x_fake, key)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves((terms, grads)), jax.tree.leaves((want_terms,
                                                                          want_grads))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(want_terms[3]["calls"]) == 2.0  # the penalty's calls left the state alone


def test_linear_critic_terms_by_hand():
    """T(x) = ⟨w, x⟩: scores ⟨w, x⟩ and W-div k·½·(‖w‖^p + ‖w‖^p) = k‖w‖^p, shared."""
    w = jnp.linspace(-0.3, 0.4, DIM).reshape(SAMPLE_SHAPE)
    x_real, x_fake = random_batches(36)

    def critic(x, state):
        return jnp.sum(x * w, axis=(1, 2)), state

    terms = gp.critic_scores_and_penalty(critic, None, x_real, x_fake,
                                         gp.Penalty(k=2.0, p=6.0))
    np.testing.assert_allclose(terms.real_scores, np.sum(x_real * np.asarray(w), axis=(1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(terms.penalty, 2.0 * float(jnp.sum(w**2)) ** 3, rtol=1e-5)
    assert terms.state is None


@pytest.mark.parametrize("strategy, shared_calls, separate_calls_count", [
    ("real_and_fake", 2, 4), ("real", 2, 3), ("real_fake_interpolation", 3, 3)])
def test_shared_forward_runs_one_pass_per_batch(strategy, shared_calls, separate_calls_count):
    seen = []

    def critic(x, state):
        seen.append(x.shape[0])
        return jnp.sum(_flat(x) ** 2, axis=1), state

    x_real, x_fake = random_batches(37)
    for share, expected in ((True, shared_calls), (False, separate_calls_count)):
        seen.clear()
        jax.jit(lambda xr, xf, share=share: gp.critic_scores_and_penalty(
            critic, None, xr, xf, gp.Penalty(strategy=strategy), jax.random.key(0),
            share_forward=share))(x_real, x_fake)
        assert len(seen) == expected, (share, seen)


def test_state_reading_critic_needs_separate_calls():
    """Where the scores depend on the state (spectral norm), sharing changes the penalty:
    share_forward=False is the separate-call function, share_forward=True is not."""
    w1, w2 = (jnp.asarray(w, jnp.float32) for w in mlp_weights(38))
    x_real, x_fake = random_batches(39)
    key = jax.random.key(0)
    penalty = gp.Penalty()
    results = {share: loss_terms(lambda *args, share=share: gp.critic_scores_and_penalty(
        *args[:4], penalty, args[4], share_forward=share), reads_state=True)(
        w1, w2, x_real, x_fake, key) for share in (True, False)}
    (want_loss, _), _ = loss_terms(
        lambda *args: separate_calls(*args[:4], "wgan_div", "real_and_fake", args[4]),
        reads_state=True)(w1, w2, x_real, x_fake, key)
    np.testing.assert_allclose(results[False][0][0], want_loss, rtol=1e-5)
    assert abs(results[True][0][0] - want_loss) > 1e-2 * abs(want_loss)


def test_any_penalty_callable_is_evaluated_at_the_final_state():
    states = []

    def my_penalty(critic_fn, x_real, x_fake, key):
        return jnp.sum(critic_fn(x_real)) * 0 + 7.0

    def critic(x, state):
        states.append(state)
        return jnp.sum(_flat(x), axis=1), state + 1

    x_real, x_fake = random_batches(40)
    terms = gp.critic_scores_and_penalty(critic, 0, x_real, x_fake, my_penalty)
    assert float(terms.penalty) == 7.0 and terms.state == 2 and states == [0, 1, 2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="wgan_dvi"), "unknown penalty kind"),
    (dict(strategy="everywhere"), "unknown strategy"),
    (dict(p=1.0), "p must be > 1"),
    (dict(k=0.0), "k must be > 0"),
    (dict(kind="r1", weight=-1.0), "weight must be >= 0"),
])
def test_bad_penalty_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gp.Penalty(**kwargs)


def test_shared_forward_checks_its_inputs():
    x_real, x_fake = random_batches(41)
    with pytest.raises(ValueError, match="shape"):
        gp.critic_scores_and_penalty(lambda x, s: (jnp.zeros((2,)), s), None, x_real, x_fake,
                                     gp.Penalty())
    with pytest.raises(ValueError, match="needs a key"):
        gp.critic_scores_and_penalty(lambda x, s: (jnp.sum(_flat(x), 1), s), None, x_real,
                                     x_fake, gp.Penalty(strategy="real_fake_interpolation"))


# ----------------------------------------------------------------------------------------
# The GAN experiment's critic update runs the shared forward: one update of every preset
# against the separate-call objective it replaced (values and gradients, float32).

PRESET_CASES = [("mixture", preset) for preset in gan.config.PRESETS] + [
    ("mixture", "wgan_sn", "penalty.kind=wgan_div"),  # SN critic: separate calls kept
    # The image nets compile for about a minute each on 2 cores; the BN critic's shared
    # forward is held to separate calls unmarked below (test_dcgan_batch_norm_critic_...).
    pytest.param(("images", "wgan_div"), marks=pytest.mark.slow),
    pytest.param(("images", "dcgan"), marks=pytest.mark.slow),
    pytest.param(("images", "wgan_gp"), marks=pytest.mark.slow),
    pytest.param(("images", "wgan_sn", "penalty.kind=r1"), marks=pytest.mark.slow),
]


def _tiny_config(kind, preset, *overrides):
    config = gan.get_config(preset)
    configs.apply_overrides(config, [
        f"data.kind={kind}", "data.path=unused", "model.mlp.width=16", "model.mlp.num_hidden=2",
        "data.resolution=32", "model.dcgan.base_channels=4", "batch_size=8", *overrides])
    return config


def _separate_call_objective(nets, config):
    """The experiment's critic objective before the shared forward, written out."""
    gan_loss = gan_losses.get_gan_loss(config.loss)
    kind, strategy = config.penalty.kind, config.penalty.strategy
    public = {
        "wgan_div": lambda c, xr, xf, key: gp.wgan_div_penalty(
            c, xr, xf, k=config.penalty.k, p=config.penalty.p, strategy=strategy, key=key),
        "wgan_gp": lambda c, xr, xf, key: gp.wgan_gp_penalty(
            c, xr, xf, key, weight=config.penalty.weight, center=config.penalty.center,
            strategy=strategy),
        "r1": lambda c, xr, xf, key: gp.r1_penalty(c, xr, weight=config.penalty.weight),
        "none": lambda c, xr, xf, key: jnp.zeros((), jnp.float32),
    }[kind]

    def apply(params, collections, x):
        scores, updates = nets.critic.apply({"params": params, **collections}, x, train=True,
                                            mutable=["batch_stats"])
        return scores, {**collections, **updates}

    def objective(params, collections, x_real, x_fake, key):
        real_scores, collections = apply(params, collections, x_real)
        fake_scores, collections = apply(params, collections, x_fake)
        penalty = public(lambda x: apply(params, collections, x)[0], x_real, x_fake, key)
        loss = gan_loss.critic(real_scores, fake_scores) + penalty
        w_distance = jnp.mean(real_scores) - jnp.mean(fake_scores)
        return loss, (collections, {"critic_loss": loss, "penalty": penalty,
                                    "w_distance": w_distance})

    return objective


def _close(got, want, rtol=1e-4):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert np.linalg.norm(g - w) <= rtol * np.linalg.norm(w) + 1e-6, (g, w)


@pytest.mark.parametrize("case", PRESET_CASES, ids=lambda case: "-".join(case))
def test_experiment_critic_update_equals_separate_calls(case):
    kind, preset, *overrides = case
    config = _tiny_config(kind, preset, *overrides)
    nets = gan_train.build_nets(config)
    optimizers = gan_train.make_optimizers(config)
    step = gan_train.make_train_step(
        nets, optimizers, gan_losses.get_gan_loss(config.loss),
        gan_train.make_penalty(config.penalty), critic_steps=1, generator_steps=1)
    state = jax.jit(gan_train.make_init_state(nets, optimizers, 8))(jax.random.key(0))
    rng = np.random.default_rng(1)
    real = (rng.normal(size=(8, 2)).astype(np.float32) if kind == "mixture"
            else rng.integers(0, 256, (8, *nets.sample_shape), dtype=np.uint8))
    key = jax.random.key(2)
    after, metrics = jax.jit(step)(state, {"real": real}, key)

    # The same update by hand, with the keys the step derives from `key`.
    critic_key, _ = jax.random.split(key)
    z_key, penalty_key = jax.random.split(jax.random.split(critic_key, 1)[0])
    generator = state["generator"]
    x_fake, _ = nets.generator.apply(
        {"params": generator["params"], **generator["collections"]},
        jax.random.normal(z_key, (8, nets.z_dim)), train=True, mutable=["batch_stats"])
    critic = state["critic"]
    grads, (collections, want) = jax.jit(jax.grad(
        _separate_call_objective(nets, config), has_aux=True))(
        critic["params"], critic["collections"], input_pipeline.to_model_range(real), x_fake,
        penalty_key)
    params, _, norms = trainer.apply_updates(critic["params"], grads, critic["opt_state"],
                                             optimizers[0])
    want["critic_grad_norm"] = norms["grad_norm"]
    _close({name: metrics[name] for name in want}, want)
    _close(after["critic"]["collections"], collections)
    # Adam's first step moves each parameter by about lr·sign(g): compare where |g| is well
    # above Adam's ε, since a near-zero gradient's sign is rounding.
    for got_leaf, want_leaf, grad in zip(*(jax.tree.leaves(tree) for tree in (
            after["critic"]["params"], params, grads))):
        clear = np.abs(np.asarray(grad)) > 1e-5
        np.testing.assert_allclose(np.asarray(got_leaf)[clear], np.asarray(want_leaf)[clear],
                                   rtol=1e-5, atol=1e-7)
    if config.penalty.kind != "none":
        assert float(want["penalty"]) > 0


@pytest.mark.parametrize("preset", ["wgan_div", pytest.param("wgan_sn", marks=pytest.mark.slow)])
def test_dcgan_batch_norm_critic_shared_forward_equals_separate_calls(preset):
    """The image critics normalise each batch with its own statistics: the shared forward
    gives the separate calls' loss, gradients and batch_stats (BN critic), and for the
    spectrally normalised critic it would not, which is why the experiment keeps separate
    calls there."""
    # XLA's own convs compile several times faster than the patch-matmul ones on CPU.
    config = _tiny_config("images", preset, "model.dcgan.conv=xla")
    nets = gan_train.build_nets(config)
    collections = dict(nets.critic.init(jax.random.key(0), jnp.zeros((4, 32, 32, 3)),
                                        train=False))
    params = collections.pop("params")
    rng = np.random.default_rng(3)
    x_real = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    x_fake = np.tanh(rng.normal(size=(4, 32, 32, 3))).astype(np.float32)

    def shared(params, collections):
        def critic(x, collections):
            scores, updates = nets.critic.apply({"params": params, **collections}, x,
                                                train=True, mutable=["batch_stats"])
            return scores, {**collections, **updates}

        real, fake, penalty, collections = gp.critic_scores_and_penalty(
            critic, collections, x_real, x_fake, gp.Penalty(k=2.0, p=6.0))
        loss = jnp.mean(fake) - jnp.mean(real) + penalty
        return loss, (collections, {"penalty": penalty})

    config.penalty.kind = "wgan_div"
    separate = _separate_call_objective(nets, config)
    got = jax.jit(jax.value_and_grad(shared, has_aux=True))(params, dict(collections))
    want = jax.jit(jax.value_and_grad(
        lambda p, c: separate(p, c, x_real, x_fake, None), has_aux=True))(
        params, dict(collections))
    (loss, (stats, terms)), grads = got
    (want_loss, (want_stats, want_terms)), want_grads = want
    assert float(want_terms["penalty"]) > 0
    if preset == "wgan_sn":
        assert abs(float(loss) - float(want_loss)) > 1e-4 * abs(float(want_loss))
        return
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    _close(stats, want_stats)
    _close(grads, want_grads)
