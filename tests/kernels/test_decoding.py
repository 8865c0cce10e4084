"""Tests for kernels/decoding.py against brute-force enumeration on a tiny Markov model."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import decoding

PAD, START, EOS = 0, 1, 2
CONTENT = (3, 4, 5)
VOCAB = 6
BATCH = 2


def markov_tables(seed, eos_boost=0.0, repeat_boost=0.0):
    """(B, V, V, V) second-order log-prob tables: log p(next | prev2, prev1), per batch row.

    PAD and START are never generated. ``eos_boost`` makes EOS likelier (so short outputs
    win unless ``min_len`` forbids them), ``repeat_boost`` makes 3 → 3 likelier (so the
    best outputs repeat a bigram unless blocked).
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(BATCH, VOCAB, VOCAB, VOCAB)) * 1.5
    logits[..., EOS] += eos_boost
    logits[:, :, 3, 3] += repeat_boost
    logits[..., [PAD, START]] = -np.inf
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def markov_step_fn(tables):
    """A step function whose cache holds the previous token and the batch row.

    The model is second order, so a wrongly reordered cache gives wrong log-probs.
    """
    tables = jnp.asarray(tables, jnp.float32)

    def step_fn(cache, tokens):
        log_probs = tables[cache["row"], cache["prev"], tokens]
        return log_probs, {"row": cache["row"], "prev": tokens}

    return step_fn


def initial_cache():
    return {"row": jnp.arange(BATCH), "prev": jnp.full((BATCH,), START)}


def sequence_log_prob(tables, row, sequence):
    prev2, prev1, total = START, START, 0.0
    for token in sequence:
        total += tables[row, prev2, prev1, token]
        prev2, prev1 = prev1, token
    return total


def has_repeated_ngram(sequence, n):
    grams = [tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1)]
    return n > 0 and len(grams) != len(set(grams))


def lp(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


def brute_force(tables, row, *, max_len, alpha, min_len=0, ngram=0):
    """Every sequence ending in its only EOS within ``max_len`` tokens, best first."""
    ranked = []
    for length in range(1, max_len + 1):
        for body in itertools.product(CONTENT, repeat=length - 1):
            sequence = list(body) + [EOS]
            if len(body) < min_len or has_repeated_ngram(sequence, ngram):
                continue
            log_prob = sequence_log_prob(tables, row, sequence)
            ranked.append((log_prob / lp(length, alpha), log_prob, sequence))
    return sorted(ranked, key=lambda r: -r[0])


def run_beam(tables, **kwargs):
    search = jax.jit(functools.partial(decoding.beam_search, eos_id=EOS, **kwargs),
                     static_argnums=0)
    return search(markov_step_fn(tables), initial_cache(), START)


def assert_matches_brute_force(result, tables, *, max_len, alpha, min_len=0, ngram=0):
    beams = result.scores.shape[1]
    for row in range(BATCH):
        expected = brute_force(tables, row, max_len=max_len, alpha=alpha, min_len=min_len,
                               ngram=ngram)[:beams]
        assert len(expected) == beams  # so every returned slot is checked
        for k, (score, log_prob, sequence) in enumerate(expected):
            length = len(sequence)
            got = np.asarray(result.sequences[row, k])
            assert got[:length].tolist() == sequence, (row, k)
            np.testing.assert_array_equal(got[length:], PAD)
            np.testing.assert_allclose(result.scores[row, k], score, rtol=1e-5)
            np.testing.assert_allclose(result.log_probs[row, k], log_prob, rtol=1e-5)
            assert int(result.lengths[row, k]) == length and bool(result.finished[row, k])


# ------------------------------------------------------------------------------------------
# Beam search against brute force: with K at least the number of live prefixes
# (3^(L−1) = 27 for L = 4) the search is exhaustive and its n-best list is exact.


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_wide_beam_returns_the_brute_force_n_best(alpha):
    tables = markov_tables(0)
    result = run_beam(tables, beam_size=27, max_len=4, alpha=alpha)
    assert_matches_brute_force(result, tables, max_len=4, alpha=alpha)


def test_length_penalty_changes_the_winner():
    """The test above is not blind to alpha: here alpha picks a different best sequence."""
    tables = markov_tables(4, eos_boost=0.5)
    best = {alpha: brute_force(tables, 0, max_len=4, alpha=alpha)[0][2] for alpha in (0, 3)}
    assert len(best[0]) < len(best[3])
    for alpha in (0.0, 3.0):
        result = run_beam(tables, beam_size=27, max_len=4, alpha=alpha)
        assert np.asarray(result.sequences[0, 0, :len(best[alpha])]).tolist() == best[alpha]


def test_min_len_forbids_early_eos_and_matches_brute_force():
    tables = markov_tables(2, eos_boost=2.0)
    unconstrained = brute_force(tables, 0, max_len=4, alpha=0.0)[0][2]
    assert len(unconstrained) - 1 < 2  # the constraint binds
    result = run_beam(tables, beam_size=27, max_len=4, min_len=2)
    assert_matches_brute_force(result, tables, max_len=4, alpha=0.0, min_len=2)
    assert (np.asarray(result.lengths) >= 3).all()


def most_live_prefixes(max_len, ngram):
    """The most content prefixes free of repeated n-grams, over lengths below max_len."""
    return max(sum(not has_repeated_ngram(list(p), ngram)
                   for p in itertools.product(CONTENT, repeat=length))
               for length in range(max_len))


@pytest.mark.parametrize("ngram", [1, 2])
def test_ngram_blocking_matches_brute_force(ngram):
    tables = markov_tables(3, eos_boost=-1.0, repeat_boost=3.0)
    assert has_repeated_ngram(brute_force(tables, 0, max_len=5, alpha=3.0)[0][2], ngram)
    beams = most_live_prefixes(5, ngram)  # 24 for bigrams, 6 for unigrams: exhaustive
    result = run_beam(tables, beam_size=beams, max_len=5, alpha=3.0,
                      no_repeat_ngram_size=ngram)
    for row in range(BATCH):
        expected = brute_force(tables, row, max_len=5, alpha=3.0, ngram=ngram)
        count = min(beams, len(expected))
        for k in range(count):
            score, _, sequence = expected[k]
            assert np.asarray(result.sequences[row, k, :len(sequence)]).tolist() == sequence
            np.testing.assert_allclose(result.scores[row, k], score, rtol=1e-5)
        for k in range(beams):  # every returned hypothesis, even the fillers, obeys the rule
            tokens = np.asarray(result.sequences[row, k, :int(result.lengths[row, k])])
            assert not has_repeated_ngram(tokens.tolist(), ngram)


def test_narrow_beam_returns_consistent_sorted_hypotheses():
    tables = markov_tables(4)
    result = run_beam(tables, beam_size=3, max_len=6, alpha=0.6)
    for row in range(BATCH):
        best = brute_force(tables, row, max_len=6, alpha=0.6)[0][0]
        scores = np.asarray(result.scores[row])
        assert (np.diff(scores) <= 0).all() and scores[0] <= best + 1e-5
        for k in range(3):
            length = int(result.lengths[row, k])
            sequence = np.asarray(result.sequences[row, k, :length]).tolist()
            assert bool(result.finished[row, k]) and sequence[-1] == EOS
            log_prob = sequence_log_prob(tables, row, sequence)
            np.testing.assert_allclose(result.log_probs[row, k], log_prob, rtol=1e-5)
            np.testing.assert_allclose(scores[k], log_prob / lp(length, 0.6), rtol=1e-5)


def test_without_eos_the_best_truncated_hypotheses_fill_the_result():
    tables = markov_tables(5)
    tables[..., EOS] = -np.inf  # EOS never allowed: nothing finishes
    result = run_beam(tables, beam_size=9, max_len=3, alpha=1.0)
    assert not np.asarray(result.finished).any()
    np.testing.assert_array_equal(result.lengths, 3)
    for row in range(BATCH):
        every = sorted((sequence_log_prob(tables, row, s) for s in
                        itertools.product(CONTENT, repeat=3)), reverse=True)[:9]
        np.testing.assert_allclose(result.log_probs[row], every, rtol=1e-5)
        np.testing.assert_allclose(result.scores[row], np.array(every) / lp(3, 1.0), rtol=1e-5)


def test_beam_search_compiles_once_per_shape():
    traces = []

    @jax.jit
    def search(tables):
        traces.append(1)
        return decoding.beam_search(markov_step_fn(tables), initial_cache(), START,
                                    beam_size=4, max_len=5, eos_id=EOS, alpha=0.6,
                                    min_len=1, no_repeat_ngram_size=2)

    first = search(jnp.asarray(markov_tables(6), jnp.float32))
    second = search(jnp.asarray(markov_tables(7), jnp.float32))
    assert len(traces) == 1
    assert not np.array_equal(first.sequences, second.sequences)


def test_early_stop_returns_what_running_to_max_len_returns(monkeypatch):
    tables = markov_tables(8, eos_boost=2.0)
    early = run_beam(tables, beam_size=4, max_len=12, alpha=0.5)
    state = decoding.init_beam_state(initial_cache(), START, beam_size=4, max_len=12)
    step = functools.partial(decoding.beam_search_step, step_fn=markov_step_fn(tables),
                             eos_id=EOS, alpha=0.5)
    while not decoding.beam_search_can_stop(state, max_len=12, alpha=0.5):
        state = step(state)
    assert int(state.step) < 12  # it did stop early
    monkeypatch.setattr(decoding, "beam_search_can_stop",
                        lambda state, *, max_len, alpha: state.step >= max_len)
    full = run_beam(tables, beam_size=4, max_len=12, alpha=0.5)
    for got, want in zip(early, full):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------
# Beam search under the seed's stop rule.


def post_rule_reference(tables, row, *, beam_size, max_len, min_len=0, ngram=0):
    """The seed's beam search in plain Python: stop when a step's best candidate has ended.

    Returns (sequence with EOS if it ended, Σ log p, ended, the alive list at the stop).
    """
    alive = [([], 0.0)]
    for _ in range(max_len):
        candidates, ends = [], []
        for sequence, score in alive:
            prev2, prev1 = ([START, START] + sequence)[-2:]
            for token in range(VOCAB):
                log_prob = tables[row, prev2, prev1, token]
                blocked = (token == EOS and len(sequence) < min_len) or (
                    ngram and has_repeated_ngram(sequence + [token], ngram))
                if np.isfinite(log_prob) and not blocked:
                    entry = (sequence + [token], score + log_prob)
                    (ends if token == EOS else candidates).append(entry)
        alive = sorted(candidates, key=lambda e: -e[1])[:beam_size]
        best_end = max(ends, key=lambda e: e[1], default=None)
        if best_end and (not alive or best_end[1] >= alive[0][1]):
            return best_end[0], best_end[1], True, alive
    return alive[0][0], alive[0][1], False, alive


@pytest.mark.parametrize("seed, eos_boost, kwargs", [
    (10, 0.0, {}), (11, 1.0, {}), (12, 2.5, {}), (13, 1.0, {"min_len": 3}),
    (14, -1.0, {"ngram": 2}), (15, -4.0, {})])
def test_post_stop_rule_matches_the_plain_python_search(seed, eos_boost, kwargs):
    tables = markov_tables(seed, eos_boost=eos_boost, repeat_boost=1.0)
    result = run_beam(tables, beam_size=3, max_len=6, alpha=0.6, stop_rule="post",
                      min_len=kwargs.get("min_len", 0),
                      no_repeat_ngram_size=kwargs.get("ngram", 0))
    for row in range(BATCH):
        sequence, log_prob, ended, alive = post_rule_reference(
            tables, row, beam_size=3, max_len=6, **kwargs)
        length = int(result.lengths[row, 0])
        assert length == len(sequence)
        assert np.asarray(result.sequences[row, 0, :length]).tolist() == sequence
        np.testing.assert_array_equal(result.sequences[row, 0, length:], PAD)
        np.testing.assert_allclose(result.log_probs[row, 0], log_prob, rtol=1e-5)
        np.testing.assert_allclose(result.scores[row, 0], log_prob / lp(length, 0.6),
                                   rtol=1e-5)
        assert bool(result.finished[row, 0]) == ended
        assert not np.asarray(result.finished[row, 1:]).any()
        rest = alive[:2] if ended else alive[1:]  # the other slots: the best alive ones
        for k, (other, other_log_prob) in enumerate(rest, start=1):
            assert np.asarray(result.sequences[row, k, :length]).tolist() == other
            np.testing.assert_allclose(result.log_probs[row, k], other_log_prob, rtol=1e-5)


def test_post_stop_rule_avoids_the_empty_output_an_exact_search_returns():
    # EOS first is likely but not the first step's best, so the seed's rule goes on while an
    # exhaustive search under raw sums returns the one-token output [EOS].
    tables = markov_tables(16)
    tables[:, START, START] = np.log([1e-30, 1e-30, 0.3, 0.35, 0.2, 0.15])
    for rule, expected_length in (("exhaustive", 1), ("post", None)):
        result = run_beam(tables, beam_size=2, max_len=5, stop_rule=rule)
        lengths = np.asarray(result.lengths[:, 0])
        if expected_length:
            np.testing.assert_array_equal(lengths, expected_length)
        else:
            assert (lengths > 1).all()


def test_unknown_stop_rule_is_refused():
    with pytest.raises(ValueError, match="stop_rule must be one of"):
        run_beam(markov_tables(0), beam_size=2, max_len=4, stop_rule="first")


# ------------------------------------------------------------------------------------------
# Greedy.


def greedy_reference(tables, row, *, max_len, min_len=0, ngram=0):
    """The argmax chain in plain Python, with the constraints written out."""
    sequence, total = [], 0.0
    prev2, prev1 = START, START
    while len(sequence) < max_len:
        log_probs = tables[row, prev2, prev1].copy()
        if len(sequence) < min_len:
            log_probs[EOS] = -np.inf
        for token in range(VOCAB):
            if ngram and has_repeated_ngram(sequence + [token], ngram):
                log_probs[token] = -np.inf
        token = int(np.argmax(log_probs))
        sequence.append(token)
        total += log_probs[token]
        prev2, prev1 = prev1, token
        if token == EOS:
            break
    return sequence, total


@pytest.mark.parametrize("kwargs", [{}, {"min_len": 3}, {"ngram": 2}, {"ngram": 1}])
def test_greedy_is_the_argmax_chain(kwargs):
    tables = markov_tables(9, eos_boost=0.5, repeat_boost=2.0)
    search = jax.jit(functools.partial(
        decoding.greedy_search, max_len=7, eos_id=EOS, min_len=kwargs.get("min_len", 0),
        no_repeat_ngram_size=kwargs.get("ngram", 0)), static_argnums=0)
    result = search(markov_step_fn(tables), initial_cache(), START)
    for row in range(BATCH):
        sequence, total = greedy_reference(tables, row, max_len=7, **kwargs)
        got = np.asarray(result.sequences[row])
        assert got[:len(sequence)].tolist() == sequence
        np.testing.assert_array_equal(got[len(sequence):], PAD)
        assert int(result.lengths[row]) == len(sequence)
        assert bool(result.finished[row]) == (sequence[-1] == EOS)
        np.testing.assert_allclose(result.log_probs[row], total, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Pieces.


def test_repeated_ngram_mask_by_hand():
    sequences = jnp.array([[3, 4, 3, 0, 0], [5, 5, 5, 0, 0]])
    step = jnp.int32(3)
    mask = functools.partial(decoding.repeated_ngram_mask, sequences, step, VOCAB)
    # n = 2: suffix (3) was followed by 4; suffix (5) by 5.
    assert np.argwhere(mask(2)).tolist() == [[0, 4], [1, 5]]
    # n = 1: every token already present.
    assert np.argwhere(mask(1)).tolist() == [[0, 3], [0, 4], [1, 5]]
    # n = 3: (4, 3) never began a trigram; (5, 5) began (5, 5, 5).
    assert np.argwhere(mask(3)).tolist() == [[1, 5]]
    # Too short for any earlier n-gram.
    assert not np.asarray(decoding.repeated_ngram_mask(sequences, jnp.int32(2), VOCAB, 3)).any()


def test_length_penalty_values():
    np.testing.assert_allclose(decoding.length_penalty(jnp.array([1, 7]), 0.6),
                               [1.0, 2.0 ** 0.6], rtol=1e-6)
    np.testing.assert_array_equal(decoding.length_penalty(jnp.array([1, 30]), 0.0), 1.0)


def test_gather_beams_reorders_each_batch_row():
    tree = {"x": jnp.arange(6) * 10, "y": jnp.arange(12).reshape(6, 2)}  # B = 2, K_in = 3
    got = decoding.gather_beams(tree, jnp.array([[2, 2], [0, 1]]))
    np.testing.assert_array_equal(got["x"], [20, 20, 30, 40])
    np.testing.assert_array_equal(got["y"], [[4, 5], [4, 5], [6, 7], [8, 9]])


@pytest.mark.parametrize("kwargs, match", [
    ({"max_len": 0}, "max_len must be >= 1"),
    ({"min_len": 4}, r"min_len must lie in \[0, max_len=4\)"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be >= 0"),
    ({"alpha": -0.5}, "alpha must be >= 0"),
    ({"beam_size": 0}, "beam_size must be >= 1"),
])
def test_bad_arguments_are_refused(kwargs, match):
    arguments = dict(beam_size=2, max_len=4, eos_id=EOS) | kwargs
    with pytest.raises(ValueError, match=match):
        decoding.beam_search(markov_step_fn(markov_tables(0)), initial_cache(), START,
                             **arguments)


def test_cache_without_batch_axis_is_refused():
    with pytest.raises(ValueError, match="leading axis B = 2"):
        decoding.beam_search(markov_step_fn(markov_tables(0)),
                             {"row": jnp.arange(2), "prev": jnp.int32(1)},
                             jnp.array([START, START]), beam_size=2, max_len=3, eos_id=EOS)


# ------------------------------------------------------------------------------------------
# Synchronous bidirectional beam search against its plain-Python reference.

BI_VOCAB = 7            # 0 pad, 1 unknown, 2 and 3 the start/end pair, 4..6 content
BI_HASH = 11            # prefixes are hashed into this many states


def pair_tables(seed, batch, end_boost=0.0):
    """Random log-potentials: L2R and R2L next-token logits from both prefixes' hashes."""
    rng = np.random.default_rng(seed)
    tables = rng.normal(size=(4, batch, BI_HASH, BI_VOCAB)) * 2.0
    tables[..., 2:4] += end_boost  # both end ids (2 is R2L's end, 3 L2R's)
    return tables


def prefix_hash(prefix):
    state = 0
    for token in prefix:
        state = (state * 7 + token + 1) % BI_HASH
    return state


def pair_logits(tables, b, own, other, direction):
    """Own table at the own prefix's hash plus the cross table at the other's."""
    return tables[2 * direction, b, own] + tables[2 * direction + 1, b, other]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_probs(tables):
    def pair_probs(b, l2r_prefix, r2l_prefix):
        hl, hr = prefix_hash(l2r_prefix), prefix_hash(r2l_prefix)
        return (softmax(pair_logits(tables, b, hl, hr, 0)),
                softmax(pair_logits(tables, b, hr, hl, 1)))
    return pair_probs


def fast_pair_step(tables, batch, beams):
    """The same model with the prefix hash as each direction's cache."""
    tables = jnp.asarray(tables, jnp.float32)
    rows = jnp.arange(batch)[:, None]

    def step(l2r_hash, r2l_hash, l2r_tokens, r2l_tokens, step_index):
        del step_index
        l2r_hash = (l2r_hash * 7 + l2r_tokens + 1) % BI_HASH
        r2l_hash = (r2l_hash * 7 + r2l_tokens + 1) % BI_HASH
        hl, hr = l2r_hash.reshape(batch, beams), r2l_hash.reshape(batch, beams)
        # [b, a, c]: L2R prefix a with R2L prefix c.
        l2r = tables[0][rows, hl][:, :, None] + tables[1][rows, hr][:, None, :]
        r2l = tables[2][rows, hr][:, None, :] + tables[3][rows, hl][:, :, None]
        return jax.nn.softmax(l2r), jax.nn.softmax(r2l), l2r_hash, r2l_hash
    return step


BI_IDS = dict(l2r_start_id=2, l2r_end_id=3, r2l_start_id=3, r2l_end_id=2, forbidden=(0, 1))


@pytest.mark.parametrize("seed,beams,max_len,end_boost,extra", [
    (0, 3, 6, 0.0, {}),
    (1, 2, 5, 1.5, {}),
    (2, 3, 4, -3.0, {}),           # rarely ends: the after-L-steps rule decides
    (3, 3, 6, 2.0, {"min_len": 2}),
    (4, 2, 6, 0.0, {"no_repeat_ngram_size": 1}),
])
def test_bidirectional_beam_matches_the_python_reference(seed, beams, max_len, end_boost,
                                                         extra):
    batch = 4
    tables = pair_tables(seed, batch, end_boost)
    zeros = jnp.zeros((batch,), jnp.int32)
    search = jax.jit(lambda: decoding.bidirectional_beam_search(
        fast_pair_step(tables, batch, beams), zeros, zeros, batch_size=batch,
        beam_size=beams, max_len=max_len, **BI_IDS, **extra))
    result = jax.device_get(search())
    expected = decoding.reference_bidirectional_beam_search(
        reference_probs(tables), batch_size=batch, beam_size=beams, max_len=max_len,
        **BI_IDS, **extra)
    for b, want in enumerate(expected):
        got = result.sequences[b, :result.lengths[b]].tolist()
        assert got == want["tokens"], (b, want)
        assert result.directions[b] == want["direction"]
        assert bool(result.finished[b]) == want["finished"]
        np.testing.assert_allclose(result.scores[b], want["score"], rtol=1e-5, atol=1e-5)
        assert np.all(result.sequences[b, result.lengths[b]:] == 0)


def test_bidirectional_beam_uses_both_directions_and_the_stop_rule():
    """Across seeds both directions win sometimes, and an R2L winner is returned reversed."""
    batch, beams = 16, 3
    tables = pair_tables(7, batch, 1.0)
    zeros = jnp.zeros((batch,), jnp.int32)
    result = jax.device_get(decoding.bidirectional_beam_search(
        fast_pair_step(tables, batch, beams), zeros, zeros, batch_size=batch,
        beam_size=beams, max_len=6, **BI_IDS))
    assert set(result.directions.tolist()) == {0, 1}
    expected = decoding.reference_bidirectional_beam_search(
        reference_probs(tables), batch_size=batch, beam_size=beams, max_len=6, **BI_IDS)
    assert [e["direction"] for e in expected] == result.directions.tolist()


def test_average_over_alive_ignores_empty_slots():
    probs = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(3), (1, 2, 2)),
                        jnp.float32)  # [1, K=2, K=2, V=3]
    alive = jnp.array([[0.0, -jnp.inf]])
    np.testing.assert_allclose(decoding._average_over_alive(probs, alive, 2),
                               probs[:, :, 0], rtol=1e-6)
    np.testing.assert_allclose(decoding._average_over_alive(probs, alive, 1),
                               probs[:, 0, :], rtol=1e-6)
    both = jnp.zeros((1, 2))
    np.testing.assert_allclose(decoding._average_over_alive(probs, both, 2),
                               probs.mean(2), rtol=1e-6)
