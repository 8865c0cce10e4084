"""Tests for models/seq2seq.py: shapes, parameter count, the cached step against the full
forward pass, and the cached bidirectional search against the post's full re-run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.headlines import decode
from models.seq2seq import HeadlineSeq2Seq, SelfModulatedLayerNorm

SIZES = dict(vocab_size=23, embed_dim=12, encoder_units=6, decoder_units=10, heads=2,
             head_dim=4, modulation_dim=5)


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def expected_params(interaction, V=23, E=12, U=6, D=10, H=2, Dh=4, M=5):
    """Written out layer by layer from the architecture in the module docstring."""
    lstm = lambda f, u: f * 4 * u + u * 4 * u + 8 * u  # noqa: E731
    smln = lambda f: 2 * U * M + M + 2 * (M * f + f)  # noqa: E731
    encoder = 2 * E + 2 * lstm(E, U) + 2 * 2 * U + 2 * lstm(2 * U, U)
    decoder = smln(E) + smln(D) + smln(D) + lstm(E, D) + lstm(D, D)
    text_attention = D * H * Dh + 2 * (2 * U * H * Dh)
    cross = 3 * D * H * Dh if interaction else 0
    features = D + H * Dh + (H * Dh if interaction else 0)
    per_direction = decoder + text_attention + cross + features * D + D
    return V * E + encoder + 2 * per_direction + D * V + V + 2 * V


def make(interaction=True, seed=0):
    model = HeadlineSeq2Seq(**SIZES, interaction=interaction)
    text = jnp.asarray(np.random.default_rng(seed).integers(4, 23, (3, 9)), jnp.int32)
    text = text.at[1, 6:].set(0).at[2, 3:].set(0)
    titles = jnp.asarray(np.random.default_rng(seed + 1).integers(4, 23, (3, 7)), jnp.int32)
    # Random weights from numpy on the shapes init would give: compiling init (orthogonal
    # initialisers included) costs far more than these tests, and nothing here needs it.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), text, titles,
                            titles[:, ::-1])["params"]
    rng = np.random.default_rng(seed + 2)
    params = jax.tree.map(lambda p: jnp.asarray(0.3 * rng.standard_normal(p.shape),
                                                jnp.float32), shapes)
    return model, params, text, titles


@pytest.mark.parametrize("interaction", [True, False])
def test_output_shapes_and_parameter_count(interaction):
    model, params, text, titles = make(interaction)
    l2r, r2l = jax.jit(model.apply)({"params": params}, text, titles, titles[:, ::-1])
    assert l2r.shape == r2l.shape == (3, 7, 23)
    np.testing.assert_allclose(np.exp(l2r).sum(-1), 1.0, rtol=1e-5)
    assert count(params) == expected_params(interaction)
    assert ("cross_attention_l2r" in params) == interaction


def test_self_modulated_layer_norm_by_hand():
    layer = SelfModulatedLayerNorm(hidden_dim=3)
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5))
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 6))
    params = layer.init(jax.random.PRNGKey(2), h, z)["params"]
    params = jax.tree.map(lambda p: p + 0.3, params)
    out = layer.apply({"params": params}, h, z)
    hidden = np.maximum(z @ params["hidden"]["kernel"] + params["hidden"]["bias"], 0)
    gamma = hidden @ params["gamma"]["kernel"] + params["gamma"]["bias"]
    beta = hidden @ params["beta"]["kernel"] + params["beta"]["bias"]
    h = np.asarray(h)
    normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, normed * (1 + gamma[:, None]) + beta[:, None], rtol=1e-4,
                               atol=1e-5)


def test_cross_direction_attention_is_causal():
    """L2R position n must not change when R2L tokens after position n change."""
    model, params, text, titles = make()
    r2l = titles[:, ::-1]
    changed = r2l.at[:, 4:].set(5)
    forward = jax.jit(model.apply)
    base, _ = forward({"params": params}, text, titles, r2l)
    other, _ = forward({"params": params}, text, titles, changed)
    np.testing.assert_allclose(base[:, :4], other[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(base[:, 4:], other[:, 4:], atol=1e-4)


def test_cached_steps_equal_the_full_forward_pass():
    """Stepping both decoders one token at a time gives the teacher-forced log-probs."""
    model, params, text, titles = make()
    r2l_ids = titles[:, ::-1]
    full_l2r, full_r2l = jax.jit(model.apply)({"params": params}, text, titles, r2l_ids)
    apply = functools.partial(model.apply, {"params": params})

    @jax.jit
    def stepped():
        encoded = apply(text, method=HeadlineSeq2Seq.encode)
        kv = {d: apply(d, encoded, method=HeadlineSeq2Seq.text_keys_values)
              for d in ("l2r", "r2l")}
        caches = {d: apply(3, 7, method=HeadlineSeq2Seq.init_cache) for d in ("l2r", "r2l")}
        ids = {"l2r": titles, "r2l": r2l_ids}
        outputs = {"l2r": [], "r2l": []}
        for n in range(7):
            ys = {}
            for d in ("l2r", "r2l"):
                ys[d], caches[d] = apply(d, caches[d], ids[d][:, n], encoded.x_max,
                                         jnp.int32(n), method=HeadlineSeq2Seq.decoder_step)
            for d, other in (("l2r", "r2l"), ("r2l", "l2r")):
                # One hypothesis per batch row: K = 1, pairs (B, 1, 1, V).
                outputs[d].append(apply(d, ys[d][:, None], caches[other], jnp.int32(n),
                                        kv[d], encoded,
                                        method=HeadlineSeq2Seq.pair_log_probs)[:, 0, 0])
        return jnp.stack(outputs["l2r"], 1), jnp.stack(outputs["r2l"], 1)

    step_l2r, step_r2l = stepped()
    np.testing.assert_allclose(step_l2r, full_l2r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(step_r2l, full_r2l, rtol=1e-4, atol=1e-5)


def test_incremental_bidirectional_search_equals_the_full_rerun():
    """The cached search returns exactly the hypotheses and scores of the post's way, the
    whole model re-run on every prefix pair at every step, on the same model."""
    from experiments.headlines.input_pipeline import END, START
    from kernels import decoding
    model, params, text, _ = make(seed=3)
    apply = functools.partial(model.apply, {"params": params})
    encoded = apply(text, method=HeadlineSeq2Seq.encode)
    ids = dict(l2r_start_id=START, l2r_end_id=END, r2l_start_id=END, r2l_end_id=START,
               forbidden=(0, 1))
    cache = apply(3, 5, method=HeadlineSeq2Seq.init_cache)
    history = jnp.zeros((3, 5), jnp.int32)

    def search(step, c):
        return jax.device_get(jax.jit(lambda c: decoding.bidirectional_beam_search(
            step, c, c, batch_size=3, beam_size=2, max_len=5, **ids))(c))

    cached = search(decode.make_pair_step(model, params, encoded, 2), cache)
    rerun = search(decode.make_rerun_pair_step(model, params, text, 2), history)
    np.testing.assert_array_equal(cached.sequences, rerun.sequences)
    np.testing.assert_array_equal(cached.lengths, rerun.lengths)
    np.testing.assert_array_equal(cached.directions, rerun.directions)
    np.testing.assert_allclose(cached.scores, rerun.scores, rtol=1e-5)
    assert cached.lengths.min() > 0


def test_context_ids_replace_what_the_other_direction_exposes():
    """Two-pass training: the other direction's states come from the context ids; each
    direction's own inputs and predictions positions are unchanged."""
    model, params, text, titles = make()
    r2l = titles[:, ::-1]
    apply = functools.partial(model.apply, {"params": params})
    apply = jax.jit(apply)
    base = apply(text, titles, r2l)
    same = apply(text, titles, r2l, l2r_context_ids=titles, r2l_context_ids=r2l)
    np.testing.assert_allclose(base[0], same[0], rtol=1e-6)
    np.testing.assert_allclose(base[1], same[1], rtol=1e-6)
    pseudo = titles.at[:, 1:].set(9)
    changed = apply(text, titles, r2l, l2r_context_ids=pseudo)
    np.testing.assert_allclose(changed[0], base[0], rtol=1e-6)  # L2R reads R2L: unchanged
    assert not np.allclose(changed[1], base[1], atol=1e-4)      # R2L reads the pseudo L2R


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_rescore_picks_the_best_mean_of_both_directions(alpha):
    """The n-best re-ranking against each title's R2L log-probability computed one title at
    a time, by hand: R2L reads [END, reversed title] and must predict the title then START."""
    from experiments.headlines.input_pipeline import END, PAD, START
    from kernels.decoding import DecodeResult
    model, params, text, _ = make(interaction=False)
    nbest_titles = [[[5, 6, 7], [8], [9, 10, 11, 12, 13]],
                    [[14], [15, 16], [17, 18, 19]],
                    [[20, 21, 22, 4], [5, 5], [6]]]
    log_probs = np.array([[-4.0, -2.5, -6.0], [-1.0, -3.0, -4.5], [-7.0, -3.5, -0.1]],
                         np.float32)
    finished = np.array([[True, True, True], [True, True, True], [True, True, False]])
    sequences = np.full((3, 3, 6), PAD, np.int32)
    lengths = np.zeros((3, 3), np.int32)
    for b, titles in enumerate(nbest_titles):
        for k, title in enumerate(titles):
            tokens = title + ([END] if finished[b, k] else [])
            sequences[b, k, :len(tokens)] = tokens
            lengths[b, k] = len(tokens)
    nbest = DecodeResult(jnp.asarray(sequences), jnp.asarray(log_probs), jnp.asarray(log_probs),
                         jnp.asarray(lengths), jnp.asarray(finished))

    apply = jax.jit(model.apply)     # one shape: inputs padded after the title (causal)
    expected = []
    for b, titles in enumerate(nbest_titles):
        totals = []
        for k, title in enumerate(titles):
            inputs = np.full((1, 7), PAD, np.int32)
            inputs[0, :len(title) + 1] = [END] + title[::-1]
            targets = title[::-1] + [START]
            _, r2l = apply({"params": params}, text[b:b + 1], inputs, inputs)
            r2l_score = sum(float(r2l[0, t, target]) for t, target in enumerate(targets))
            penalty = ((5.0 + lengths[b, k]) / 6.0) ** alpha
            total = (log_probs[b, k] + r2l_score) / 2.0 / penalty
            totals.append(total if finished[b, k] else -np.inf)
        expected.append(int(np.argmax(totals)))

    chosen = decode.rescore_choice(model, params, text, nbest, alpha)
    assert np.asarray(chosen).tolist() == expected
    assert expected[2] != 2             # the unfinished slot is never chosen
