"""Greedy decoding and beam search over any step function, kept apart from the models.

Glossary of shapes: B batch, K beam size, N = B·K hypotheses, V vocabulary, L ``max_len``.

A model plugs in through one pure function,

    step_fn(cache, token_ids) -> (log_probs, cache)
      token_ids: (N,) int32, the last token of every hypothesis (the start id at step 0);
      log_probs: (N, V) float, log-probabilities (≤ 0, each row normalised) of the next
        token; −inf forbids a token;
      cache: any pytree whose leaves all have leading axis N (decoder states, the encoder
        output repeated per hypothesis, a step counter): whatever the model needs to carry
        from one step to the next.

Everything here is a pure, jittable function with fixed shapes: the loop is one
`jax.lax.while_loop` over at most L steps that stops early once nothing can change the
result, and reordering hypotheses gathers every cache leaf with `jnp.take`. Trace it inside
your own `jax.jit` (with ``step_fn`` closing over the model's parameters), and it compiles
once per shape.

Beam search keeps two sets apart, as Tensor2Tensor's and Flax's WMT example do: K *alive*
hypotheses that have not emitted EOS and K *finished* ones. Each step ends every alive
hypothesis with EOS and merges those K candidates into the finished set (best K by
length-penalised score), and keeps the best K expansions by any other token alive. (Taking
the EOS candidates apart, rather than the top 2K of all expansions, means a beam as wide as
the number of live prefixes is exhaustive: its n-best list is exact.) Scores are GNMT's
(Wu et al. 2016, https://arxiv.org/abs/1609.08144):

    score(y) = log p(y) / lp(|y|),   lp(n) = ((5 + n) / 6) ** alpha,

where |y| counts the generated tokens including the EOS (not the start token); alpha = 0
gives the raw sum of log-probabilities, the seed's rule (https://kexue.fm/archives/6877).
Decoding stops after L steps, or as soon as every batch element holds K finished
hypotheses and no alive one can still beat the worst of them: with log-probs ≤ 0 and
alpha ≥ 0 an alive hypothesis can at best reach its current log p over lp(L).

Constraints, shared by both searches (`constrain_log_probs`): EOS is forbidden while fewer
than ``min_len`` tokens precede it, and with ``no_repeat_ngram_size`` = n > 0 no token may
complete an n-gram that already occurs in the hypothesis.

The beam state (`BeamState`) and the steps that act on it (`constrain_log_probs`,
`expand_beams`, `gather_beams`) are separate functions so that other searches (e.g. one
that scores two decoding directions against each other) can reuse them with their own
log-probabilities.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
StepFn = Callable[[Any, Array], tuple[Array, Any]]

NEG_INF = -jnp.inf
STOP_RULES = ("exhaustive", "post")  # `beam_search`'s stop rules


class DecodeResult(NamedTuple):
    """What a search returns; shapes for beam search, greedy drops the K axis.

    Attributes:
      sequences: (B, K, L) int32, generated tokens (EOS included, not the start token),
        ``pad_id`` after the end; best first.
      scores: (B, K) float32, the length-penalised scores the hypotheses are ranked by
        (greedy: the log-probabilities); −inf for an empty slot.
      log_probs: (B, K) float32, Σ log p of the tokens in ``sequences``.
      lengths: (B, K) int32, tokens in ``sequences``, EOS included.
      finished: (B, K) bool, whether the hypothesis ended with EOS. Beam search lists every
        finished hypothesis before any unfinished one (cut at L tokens), which only fill
        slots that no finished hypothesis took.
    """

    sequences: Array
    scores: Array
    log_probs: Array
    lengths: Array
    finished: Array


class BeamState(NamedTuple):
    """The loop state of beam search.

    Attributes:
      step: () int32, tokens generated so far by every alive hypothesis.
      alive_sequences: (B, K, L) int32, ``pad_id`` from ``step`` on.
      alive_log_probs: (B, K) float32, Σ log p; −inf for an empty slot.
      last_tokens: (B, K) int32, the token each alive hypothesis feeds ``step_fn`` next.
      cache: pytree, leaves with leading axis N = B·K in (batch, beam) order.
      finished_sequences: (B, K, L) int32.
      finished_scores: (B, K) float32, length-penalised; −inf for an empty slot.
      finished_log_probs: (B, K) float32.
      finished_lengths: (B, K) int32.
    """

    step: Array
    alive_sequences: Array
    alive_log_probs: Array
    last_tokens: Array
    cache: Any
    finished_sequences: Array
    finished_scores: Array
    finished_log_probs: Array
    finished_lengths: Array


# ------------------------------------------------------------------------------------------
# Pieces shared by the searches.


def length_penalty(length: Array, alpha: float) -> Array:
    """GNMT's lp(n) = ((5 + n) / 6) ** alpha, float32, the shape of ``length``."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _validate(*, max_len: int, min_len: int, no_repeat_ngram_size: int,
              alpha: float = 0.0, beam_size: int = 1) -> None:
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not 0 <= min_len < max_len:
        raise ValueError(f"min_len must lie in [0, max_len={max_len}), got {min_len}")
    if no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0, got {no_repeat_ngram_size}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (the early stop relies on it), got {alpha}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")


def repeated_ngram_mask(sequences: Array, step: Array, vocab_size: int, n: int) -> Array:
    """Tokens that would complete an n-gram already present in each hypothesis.

    Args:
      sequences: (N, L) int, the hypotheses; positions [0, step) hold their tokens.
      step: () int, the length of every hypothesis.
      vocab_size: V.
      n: the n-gram size, ≥ 1 (1 forbids every token already generated).

    Returns:
      (N, V) bool, True for a token t such that (last n − 1 tokens, t) occurs at some
      earlier position p ≤ step − n.
    """
    num, length = sequences.shape
    padded = jnp.pad(sequences, ((0, 0), (0, n)), constant_values=-1)  # [N, L + n]
    start = jnp.arange(length)[None, :]  # p, the first position of an earlier n-gram
    match = jnp.broadcast_to(start <= step - n, (num, length))
    for offset in range(n - 1):
        # Token `offset` of the current (n − 1)-token suffix; clipped where step < n − 1,
        # where `start <= step - n` already rules every p out.
        suffix_token = jnp.take(padded, jnp.clip(step - (n - 1) + offset, 0), axis=1)
        match &= padded[:, offset:offset + length] == suffix_token[:, None]
    banned = padded[:, n - 1:n - 1 + length]  # [N, L]: the token that followed each match
    rows = jnp.arange(num)[:, None]
    return jnp.zeros((num, vocab_size), bool).at[rows, jnp.clip(banned, 0)].max(match)


def constrain_log_probs(log_probs: Array, sequences: Array, step: Array, *, eos_id: int,
                        min_len: int = 0, no_repeat_ngram_size: int = 0) -> Array:
    """Sets forbidden next tokens to −inf: EOS before ``min_len``, repeated n-grams.

    Args:
      log_probs: (N, V) float, the model's next-token log-probabilities.
      sequences: (N, L) int, the hypotheses; positions [0, step) hold their tokens.
      step: () int, the number of tokens each hypothesis has.
      eos_id: the end token.
      min_len: EOS is forbidden while ``step < min_len``.
      no_repeat_ngram_size: n > 0 forbids tokens completing an n-gram already present.

    Returns:
      (N, V) float32.
    """
    log_probs = log_probs.astype(jnp.float32)
    if min_len > 0:
        log_probs = log_probs.at[:, eos_id].set(
            jnp.where(step < min_len, NEG_INF, log_probs[:, eos_id]))
    if no_repeat_ngram_size > 0:
        banned = repeated_ngram_mask(sequences, step, log_probs.shape[-1],
                                     no_repeat_ngram_size)
        log_probs = jnp.where(banned, NEG_INF, log_probs)
    return log_probs


def _write_step(sequences: Array, step: Array, tokens: Array) -> Array:
    """Puts ``tokens`` (...,) at position ``step`` of ``sequences`` (..., L)."""
    return jnp.where(jnp.arange(sequences.shape[-1]) == step, tokens[..., None], sequences)


def _start_tokens(start_ids, batch_size: int) -> Array:
    return jnp.broadcast_to(jnp.asarray(start_ids, jnp.int32), (batch_size,))


def _batch_size(cache, start_ids) -> int:
    """B, from ``start_ids`` when it is an array, else from the cache; checks every leaf."""
    leaves = jax.tree.leaves(cache)
    if jnp.ndim(start_ids) == 1:
        batch = jnp.shape(start_ids)[0]
    elif leaves and jnp.ndim(leaves[0]) > 0:
        batch = jnp.shape(leaves[0])[0]
    else:
        raise ValueError("cannot tell the batch size: give start_ids as a (batch,) array or "
                         "a cache whose leaves have leading axis batch")
    for leaf in leaves:
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch:
            raise ValueError(f"every cache leaf must have leading axis B = {batch}, "
                             f"got shape {jnp.shape(leaf)}")
    return batch


# ------------------------------------------------------------------------------------------
# Greedy.


def greedy_search(step_fn: StepFn, cache: Any, start_ids, *, max_len: int, eos_id: int,
                  min_len: int = 0, no_repeat_ngram_size: int = 0,
                  pad_id: int = 0) -> DecodeResult:
    """Takes the most likely allowed token at every step until EOS or ``max_len`` tokens.

    Args:
      step_fn: ``(cache, token_ids (B,)) -> (log_probs (B, V), cache)``.
      cache: pytree, leaves with leading axis B.
      start_ids: int or (B,) int, the first token fed to ``step_fn``.
      max_len: L, the most tokens generated, EOS included (static).
      eos_id: the end token (static).
      min_len: EOS is forbidden before this many tokens (static).
      no_repeat_ngram_size: n > 0 forbids repeating any n-gram (static).
      pad_id: fills ``sequences`` after the end.

    Returns:
      `DecodeResult` without the K axis: sequences (B, L), scores = log_probs (B,),
      lengths (B,), finished (B,).
    """
    _validate(max_len=max_len, min_len=min_len, no_repeat_ngram_size=no_repeat_ngram_size)
    batch = _batch_size(cache, start_ids)

    def not_done(carry):
        step, _, _, _, finished, _, _ = carry
        return (step < max_len) & ~jnp.all(finished)

    def body(carry):
        step, sequences, log_prob, lengths, finished, last, cache = carry
        step_log_probs, cache = step_fn(cache, last)
        step_log_probs = constrain_log_probs(step_log_probs, sequences, step, eos_id=eos_id,
                                             min_len=min_len,
                                             no_repeat_ngram_size=no_repeat_ngram_size)
        token = jnp.argmax(step_log_probs, axis=-1).astype(jnp.int32)
        token_log_prob = jnp.take_along_axis(step_log_probs, token[:, None], axis=-1)[:, 0]
        token = jnp.where(finished, pad_id, token)
        sequences = _write_step(sequences, step, token)
        log_prob = log_prob + jnp.where(finished, 0.0, token_log_prob)
        lengths = jnp.where(finished, lengths, step + 1)
        finished = finished | (token == eos_id)
        return step + 1, sequences, log_prob, lengths, finished, token, cache

    carry = (jnp.int32(0), jnp.full((batch, max_len), pad_id, jnp.int32),
             jnp.zeros((batch,), jnp.float32), jnp.zeros((batch,), jnp.int32),
             jnp.zeros((batch,), bool), _start_tokens(start_ids, batch), cache)
    _, sequences, log_prob, lengths, finished, _, _ = jax.lax.while_loop(not_done, body, carry)
    return DecodeResult(sequences, log_prob, log_prob, lengths, finished)


# ------------------------------------------------------------------------------------------
# Beam search.


def init_beam_state(cache: Any, start_ids, *, beam_size: int, max_len: int,
                    pad_id: int = 0) -> BeamState:
    """The state before the first step: one live hypothesis per batch element.

    Args:
      cache: pytree, leaves with leading axis B; each row is repeated K times.
      start_ids: int or (B,) int, the first token fed to ``step_fn``.
      beam_size: K.
      max_len: L.
      pad_id: fills the sequences.

    Returns:
      `BeamState` with slot 0 at log-prob 0 and the other K − 1 slots empty (−inf), so the
      first step expands one hypothesis, not K copies of it.
    """
    batch = _batch_size(cache, start_ids)
    log_probs = jnp.full((batch, beam_size), NEG_INF, jnp.float32).at[:, 0].set(0.0)
    sequences = jnp.full((batch, beam_size, max_len), pad_id, jnp.int32)
    start = jnp.broadcast_to(_start_tokens(start_ids, batch)[:, None], (batch, beam_size))
    return BeamState(
        step=jnp.int32(0),
        alive_sequences=sequences,
        alive_log_probs=log_probs,
        last_tokens=start,
        cache=jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), cache),
        finished_sequences=sequences,
        finished_scores=jnp.full((batch, beam_size), NEG_INF, jnp.float32),
        finished_log_probs=jnp.full((batch, beam_size), NEG_INF, jnp.float32),
        finished_lengths=jnp.zeros((batch, beam_size), jnp.int32),
    )


def gather_beams(tree: Any, beam_indices: Array) -> Any:
    """Reorders hypotheses: row (b, k) of the result is row (b, beam_indices[b, k]).

    Args:
      tree: pytree, leaves with leading axis B·K_in in (batch, beam) order.
      beam_indices: (B, K_out) int in [0, K_in).

    Returns:
      the pytree with leading axes B·K_out.
    """
    batch = beam_indices.shape[0]

    def gather(leaf):
        beams_in = leaf.shape[0] // batch
        rows = (jnp.arange(batch)[:, None] * beams_in + beam_indices).reshape(-1)
        return jnp.take(leaf, rows, axis=0)

    return jax.tree.map(gather, tree)


def _take(x: Array, indices: Array) -> Array:
    """x (B, M, ...) gathered along axis 1 by indices (B, M')."""
    return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)


def expand_beams(state: BeamState, log_probs: Array, new_cache: Any, *, eos_id: int,
                 alpha: float = 0.0) -> BeamState:
    """One beam-search step from given next-token log-probabilities.

    Args:
      state: the `BeamState` before the step.
      log_probs: (B, K, V) float32, constrained next-token log-probabilities of every alive
        hypothesis (−inf forbids).
      new_cache: the cache after the step, leaves with leading axis B·K in the order of
        ``state``; it is reordered here to follow the surviving hypotheses.
      eos_id: the end token.
      alpha: the length-penalty exponent.

    Returns:
      the `BeamState` after the step.
    """
    batch, beams, vocab = log_probs.shape
    step = state.step

    # Finished: the best K of the old finished set and every alive hypothesis + EOS.
    eos_log_probs = state.alive_log_probs + log_probs[..., eos_id]  # [B, K]
    ends = jnp.isfinite(eos_log_probs)
    new_scores = jnp.where(ends, eos_log_probs / length_penalty(step + 1, alpha), NEG_INF)
    finished_scores, keep = jax.lax.top_k(
        jnp.concatenate([state.finished_scores, new_scores], axis=1), beams)

    def merge_finished(old, new):
        return _take(jnp.concatenate([old, new], axis=1), keep)

    eos_tokens = jnp.full((batch, beams), eos_id, jnp.int32)
    finished_sequences = merge_finished(state.finished_sequences,
                                        _write_step(state.alive_sequences, step, eos_tokens))
    finished_log_probs = merge_finished(state.finished_log_probs,
                                        jnp.where(ends, eos_log_probs, NEG_INF))
    finished_lengths = merge_finished(state.finished_lengths,
                                      jnp.full((batch, beams), step + 1, jnp.int32))

    # Alive: the best K expansions by any other token.
    candidates = state.alive_log_probs[..., None] + log_probs.at[..., eos_id].set(NEG_INF)
    alive_log_probs, top_index = jax.lax.top_k(candidates.reshape(batch, beams * vocab), beams)
    parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
    return BeamState(
        step=step + 1,
        alive_sequences=_write_step(_take(state.alive_sequences, parent), step, token),
        alive_log_probs=alive_log_probs,
        last_tokens=token,
        cache=gather_beams(new_cache, parent),
        finished_sequences=finished_sequences,
        finished_scores=finished_scores,
        finished_log_probs=finished_log_probs,
        finished_lengths=finished_lengths,
    )


def beam_search_step(state: BeamState, step_fn: StepFn, *, eos_id: int, alpha: float = 0.0,
                     min_len: int = 0, no_repeat_ngram_size: int = 0) -> BeamState:
    """Runs ``step_fn`` on every alive hypothesis, applies the constraints, expands."""
    batch, beams, max_len = state.alive_sequences.shape
    log_probs, new_cache = step_fn(state.cache, state.last_tokens.reshape(-1))
    log_probs = constrain_log_probs(log_probs, state.alive_sequences.reshape(-1, max_len),
                                    state.step, eos_id=eos_id, min_len=min_len,
                                    no_repeat_ngram_size=no_repeat_ngram_size)
    return expand_beams(state, log_probs.reshape(batch, beams, -1), new_cache, eos_id=eos_id,
                        alpha=alpha)


def beam_search_can_stop(state: BeamState, *, max_len: int, alpha: float) -> Array:
    """() bool: after L steps, or when no alive hypothesis can still enter any finished set.

    Sound for log-probs ≤ 0 and alpha ≥ 0: an alive hypothesis's final score is at most its
    current log p divided by lp(L).
    """
    best_possible = jnp.max(state.alive_log_probs, axis=1) / length_penalty(max_len, alpha)
    worst_finished = jnp.min(state.finished_scores, axis=1)  # −inf while a slot is empty
    return (state.step >= max_len) | jnp.all(best_possible <= worst_finished)


def beam_search_result(state: BeamState, *, alpha: float) -> DecodeResult:
    """The K best hypotheses: the finished ones by score, then unfinished ones to fill.

    An unfinished hypothesis (no EOS within L tokens) is scored as if it ended there.
    """
    beams = state.finished_scores.shape[1]
    alive_scores = state.alive_log_probs / length_penalty(state.step, alpha)
    scores = jnp.concatenate([state.finished_scores, alive_scores], axis=1)
    finished = jnp.concatenate([jnp.isfinite(state.finished_scores),
                                jnp.zeros_like(alive_scores, bool)], axis=1)
    # Finished first, then by descending score (lexsort: last key is the primary one).
    order = jnp.lexsort((-scores, ~finished), axis=1)[:, :beams]

    def pick(finished_part, alive_part):
        return _take(jnp.concatenate([finished_part, alive_part], axis=1), order)

    lengths = jnp.full(alive_scores.shape, state.step, jnp.int32)
    return DecodeResult(
        sequences=pick(state.finished_sequences, state.alive_sequences),
        scores=_take(scores, order),
        log_probs=pick(state.finished_log_probs, state.alive_log_probs),
        lengths=pick(state.finished_lengths, lengths),
        finished=_take(finished, order),
    )


def _post_rule_search(state: BeamState, step_fn: StepFn, *, max_len: int, eos_id: int,
                      alpha: float, constraints: dict) -> DecodeResult:
    """The loop of `beam_search` under ``stop_rule="post"`` (see there)."""
    batch, beams, _ = state.alive_sequences.shape

    def body(carry):
        before, done, result = carry
        log_probs, new_cache = step_fn(before.cache, before.last_tokens.reshape(-1))
        log_probs = constrain_log_probs(
            log_probs, before.alive_sequences.reshape(batch * beams, max_len), before.step,
            eos_id=eos_id, **constraints).reshape(batch, beams, -1)
        after = expand_beams(before, log_probs, new_cache, eos_id=eos_id, alpha=alpha)
        score, ended, sequence, length = _best(before, log_probs, after, eos_id)
        # Slot 0 the step's best candidate; then the best alive ones not already in slot 0
        # (top_k leaves ``after``'s alive hypotheses sorted, best first).
        shift = lambda chosen, alive: jnp.where(  # noqa: E731
            ended.reshape((-1,) + (1,) * (alive.ndim - 1)),
            jnp.concatenate([chosen[:, None], alive[:, :-1]], axis=1), alive)
        lengths = jnp.broadcast_to(length[:, None], (batch, beams))
        log_prob = shift(score, after.alive_log_probs)
        chosen = DecodeResult(
            sequences=shift(sequence, after.alive_sequences),
            scores=log_prob / length_penalty(lengths, alpha),
            log_probs=log_prob,
            lengths=lengths,
            finished=jnp.zeros((batch, beams), bool).at[:, 0].set(ended))
        stop = ~done & (ended | (after.step >= max_len))
        result = jax.tree.map(
            lambda new, old: jnp.where(stop.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            chosen, result)
        return after, done | stop, result

    empty = DecodeResult(
        sequences=state.alive_sequences,
        scores=jnp.full((batch, beams), NEG_INF, jnp.float32),
        log_probs=jnp.full((batch, beams), NEG_INF, jnp.float32),
        lengths=jnp.zeros((batch, beams), jnp.int32),
        finished=jnp.zeros((batch, beams), bool))
    _, _, result = jax.lax.while_loop(lambda carry: ~jnp.all(carry[1]), body,
                                      (state, jnp.zeros((batch,), bool), empty))
    return result


def beam_search(step_fn: StepFn, cache: Any, start_ids, *, beam_size: int, max_len: int,
                eos_id: int, alpha: float = 0.0, min_len: int = 0,
                no_repeat_ngram_size: int = 0, pad_id: int = 0,
                stop_rule: str = "exhaustive") -> DecodeResult:
    """Beam search with GNMT length penalty, a minimum length and n-gram blocking.

    Two stop rules (``stop_rule``, static):

    * ``"exhaustive"``: the module's rule (see the module docstring): the K best finished
      hypotheses by length-penalised score, searched until none can change. Under raw sums
      (alpha = 0) an undertrained model's best-scoring output is often the empty one (Stahlberg
      and Byrne, "On NMT search errors and model errors", EMNLP 2019): an exact search finds it.
    * ``"post"``: the seed's (https://kexue.fm/archives/5861 and 6877): a batch element stops
      at the first step whose best candidate, over the K alive expansions and the K
      hypotheses ended at this step, is an ended one, and returns it; after L steps, the best
      candidate of the last step. A hypothesis that ends without being its step's best is
      dropped. Slot 0 holds the returned hypothesis; slots 1…K−1 the best alive hypotheses
      at that step (unfinished). Ranking within a step compares equal lengths, so alpha
      only rescales the reported scores.

    Args:
      step_fn: ``(cache, token_ids (B·K,)) -> (log_probs (B·K, V), cache)``; log-probs
        must be normalised (≤ 0) for the early stop to be exact.
      cache: pytree, leaves with leading axis B (repeated K times here).
      start_ids: int or (B,) int, the first token fed to ``step_fn``.
      beam_size: K, also the number of hypotheses returned (static).
      max_len: L, the most tokens generated, EOS included (static).
      eos_id: the end token (static).
      alpha: the length-penalty exponent, ≥ 0; 0 ranks by the raw sum of log-probs.
      min_len: EOS is forbidden before this many tokens (static).
      no_repeat_ngram_size: n > 0 forbids repeating any n-gram within a hypothesis
        (static).
      pad_id: fills ``sequences`` after the end.
      stop_rule: one of `STOP_RULES` (static), above.

    Returns:
      `DecodeResult` with a K axis, best first: sequences (B, K, L), scores, log_probs,
      lengths, finished (B, K).

    Raises:
      ValueError: on arguments out of range or a cache leaf without leading axis B.
    """
    _validate(max_len=max_len, min_len=min_len, no_repeat_ngram_size=no_repeat_ngram_size,
              alpha=alpha, beam_size=beam_size)
    if stop_rule not in STOP_RULES:
        raise ValueError(f"stop_rule must be one of {STOP_RULES}, got {stop_rule!r}")
    state = init_beam_state(cache, start_ids, beam_size=beam_size, max_len=max_len,
                            pad_id=pad_id)
    if stop_rule == "post":
        return _post_rule_search(state, step_fn, max_len=max_len, eos_id=eos_id, alpha=alpha,
                                 constraints=dict(min_len=min_len,
                                                  no_repeat_ngram_size=no_repeat_ngram_size))
    step = functools.partial(beam_search_step, step_fn=step_fn, eos_id=eos_id, alpha=alpha,
                             min_len=min_len, no_repeat_ngram_size=no_repeat_ngram_size)
    stop = functools.partial(beam_search_can_stop, max_len=max_len, alpha=alpha)
    state = jax.lax.while_loop(lambda s: ~stop(s), step, state)
    return beam_search_result(state, alpha=alpha)


# ------------------------------------------------------------------------------------------
# Synchronous bidirectional beam search (https://kexue.fm/archives/6877; SB-NMT, Zhou, Zhang
# and Zong, TACL 2019).
#
# Two directions decode at once, left-to-right (L2R) and right-to-left (R2L), each with K
# hypotheses, and every step scores all K × K (L2R hypothesis a, R2L hypothesis c) pairs:
#
#     pair_step_fn(l2r_cache, r2l_cache, l2r_tokens, r2l_tokens, step)
#       -> (l2r_probs, r2l_probs, l2r_cache, r2l_cache)
#       l2r_tokens, r2l_tokens: (N,) int32, each hypothesis's last token (N = B·K);
#       l2r_probs: (B, K, K, V) float, [b, a, c] = p(next L2R token | L2R prefix a, R2L
#         prefix c); r2l_probs: (B, K, K, V), [b, a, c] = p(next R2L token | R2L prefix c,
#         L2R prefix a); each row sums to 1;
#       caches: pytrees with leading axis N, one per direction (each is reordered by its own
#         direction's surviving parents).
#
# A direction's next-token distribution is the *probability* average over the other
# direction's alive hypotheses (L2R over c, R2L over a), then log(p + 1e-6) as the post's
# code; the direction's start and the ids in ``forbidden`` get −inf (the post drops pad,
# unknown and the start id). Each direction then takes one `expand_beams` step (raw sums of
# log-probs, alpha = 0). The stop rule is the post's of 2019-11 for each batch element: when
# the best candidate of a direction at this step is one that has just ended and its score is
# ≥ the best candidate score of the other direction, return it (L2R checked first); after L
# steps, return the better of the two directions' best candidates. One departure: a
# hypothesis that ends and is not returned is dropped (the post's code keeps it in the beam
# and feeds it further tokens past its end); the K alive hypotheses are the best that have
# not ended.


class BidirectionalResult(NamedTuple):
    """What `bidirectional_beam_search` returns.

    Attributes:
      sequences: (B, L) int32, the chosen hypothesis in reading (L2R) order, without start
        or end tokens, ``pad_id`` after it.
      lengths: (B,) int32, its tokens.
      scores: (B,) float32, its Σ log(p + 1e-6) (the end token's included when finished).
      directions: (B,) int32, 0 when the L2R search produced it, 1 for R2L.
      finished: (B,) bool, whether it ended with its direction's end token.
      steps: () int32, the steps run (all batch elements together).
    """

    sequences: Array
    lengths: Array
    scores: Array
    directions: Array
    finished: Array
    steps: Array


def _average_over_alive(probs: Array, alive_log_probs: Array, axis: int) -> Array:
    """Mean of (B, K, K, V) ``probs`` over ``axis`` (1 or 2), over the alive other side.

    ``alive_log_probs`` (B, K) belongs to the direction averaged over; empty slots (−inf)
    carry garbage states and are left out.
    """
    weights = jnp.isfinite(alive_log_probs).astype(jnp.float32)  # [B, K]
    weights = weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
    shape = (weights.shape[0], 1, weights.shape[1], 1) if axis == 2 else (
        weights.shape[0], weights.shape[1], 1, 1)
    return jnp.sum(probs.astype(jnp.float32) * weights.reshape(shape), axis=axis)


def _direction_log_probs(probs: Array, state: BeamState, *, start_id: int, eos_id: int,
                         forbidden: tuple[int, ...], min_len: int,
                         no_repeat_ngram_size: int) -> Array:
    """(B, K, V) averaged probabilities → constrained log(p + 1e-6)."""
    batch, beams, vocab = probs.shape
    log_probs = jnp.log(probs + 1e-6)
    banned = jnp.zeros((vocab,), bool).at[jnp.asarray((start_id, *forbidden))].set(True)
    log_probs = jnp.where(banned, NEG_INF, log_probs).reshape(batch * beams, vocab)
    max_len = state.alive_sequences.shape[-1]
    log_probs = constrain_log_probs(log_probs, state.alive_sequences.reshape(-1, max_len),
                                    state.step, eos_id=eos_id, min_len=min_len,
                                    no_repeat_ngram_size=no_repeat_ngram_size)
    # Empty slots stay empty: expand_beams adds −inf to every token of theirs anyway.
    return log_probs.reshape(batch, beams, vocab)


def _best(before: BeamState, log_probs: Array, after: BeamState, eos_id: int
          ) -> tuple[Array, Array, Array, Array]:
    """Per batch element, the best candidate of this step: an alive hypothesis of ``after``
    or one of ``before``'s hypotheses ended now by ``eos_id``.

    Returns:
      (score (B,), ended (B,) bool, sequence (B, L) with the end token, length (B,)).
    """
    rows = jnp.arange(log_probs.shape[0])
    end_scores = before.alive_log_probs + log_probs[..., eos_id]  # [B, K], −inf if empty
    end_parent = jnp.argmax(end_scores, axis=1)
    end_score = jnp.max(end_scores, axis=1)
    end_sequences = _write_step(before.alive_sequences[rows, end_parent], before.step,
                                jnp.full(rows.shape, eos_id, jnp.int32))
    best_alive = jnp.argmax(after.alive_log_probs, axis=1)
    alive_score = jnp.max(after.alive_log_probs, axis=1)
    ended = jnp.isfinite(end_score) & (end_score >= alive_score)
    sequences = jnp.where(ended[:, None], end_sequences, after.alive_sequences[rows, best_alive])
    return jnp.maximum(end_score, alive_score), ended, sequences, jnp.full(rows.shape,
                                                                            after.step)


def _strip_and_orient(sequences: Array, lengths: Array, finished: Array, reverse: Array,
                      pad_id: int) -> tuple[Array, Array]:
    """Drops the end token of finished hypotheses and reverses R2L ones into reading order."""
    lengths = lengths - finished.astype(jnp.int32)
    positions = jnp.arange(sequences.shape[-1])[None, :]
    source = jnp.where(reverse[:, None] & (positions < lengths[:, None]),
                       lengths[:, None] - 1 - positions, positions)
    oriented = jnp.take_along_axis(sequences, source, axis=1)
    return jnp.where(positions < lengths[:, None], oriented, pad_id), lengths


def bidirectional_beam_search(pair_step_fn: Callable, l2r_cache: Any, r2l_cache: Any, *,
                              batch_size: int, beam_size: int, max_len: int,
                              l2r_start_id: int, l2r_end_id: int, r2l_start_id: int,
                              r2l_end_id: int, forbidden: tuple[int, ...] = (),
                              min_len: int = 0, no_repeat_ngram_size: int = 0,
                              pad_id: int = 0) -> BidirectionalResult:
    """The post's synchronous bidirectional beam search (see the comment above).

    Args:
      pair_step_fn: ``(l2r_cache, r2l_cache, l2r_tokens (N,), r2l_tokens (N,), step ())
        -> (l2r_probs (B, K, K, V), r2l_probs (B, K, K, V), l2r_cache, r2l_cache)``.
      l2r_cache, r2l_cache: pytrees with leading axis B (repeated K times here).
      batch_size: B (static).
      beam_size: K per direction (static).
      max_len: L, the most tokens per direction, end token included (static).
      l2r_start_id, l2r_end_id, r2l_start_id, r2l_end_id: the token ids (the post's: 2, 3
        for L2R and 3, 2 for R2L).
      forbidden: ids neither direction may emit (the post's: pad 0 and unknown 1).
      min_len, no_repeat_ngram_size: as in `beam_search`, per direction.
      pad_id: fills the sequences.

    Returns:
      `BidirectionalResult`.
    """
    _validate(max_len=max_len, min_len=min_len, no_repeat_ngram_size=no_repeat_ngram_size,
              beam_size=beam_size)
    start = lambda token: jnp.full((batch_size,), token, jnp.int32)  # noqa: E731
    init = functools.partial(init_beam_state, beam_size=beam_size, max_len=max_len,
                             pad_id=pad_id)
    l2r, r2l = init(l2r_cache, start(l2r_start_id)), init(r2l_cache, start(r2l_start_id))
    common = dict(forbidden=tuple(forbidden), min_len=min_len,
                  no_repeat_ngram_size=no_repeat_ngram_size)
    empty = (jnp.full((batch_size,), NEG_INF, jnp.float32),
             jnp.full((batch_size, max_len), pad_id, jnp.int32),
             jnp.zeros((batch_size,), jnp.int32), jnp.zeros((batch_size,), jnp.int32),
             jnp.zeros((batch_size,), bool), jnp.zeros((batch_size,), bool))

    def body(carry):
        l2r, r2l, done, result = carry
        l2r_probs, r2l_probs, l2r_cache, r2l_cache = pair_step_fn(
            l2r.cache, r2l.cache, l2r.last_tokens.reshape(-1), r2l.last_tokens.reshape(-1),
            l2r.step)
        l2r_lp = _direction_log_probs(_average_over_alive(l2r_probs, r2l.alive_log_probs, 2),
                                      l2r, start_id=l2r_start_id, eos_id=l2r_end_id, **common)
        r2l_lp = _direction_log_probs(_average_over_alive(r2l_probs, l2r.alive_log_probs, 1),
                                      r2l, start_id=r2l_start_id, eos_id=r2l_end_id, **common)
        new_l2r = expand_beams(l2r, l2r_lp, l2r_cache, eos_id=l2r_end_id)
        new_r2l = expand_beams(r2l, r2l_lp, r2l_cache, eos_id=r2l_end_id)
        l_score, l_fin, l_seq, l_len = _best(l2r, l2r_lp, new_l2r, l2r_end_id)
        r_score, r_fin, r_seq, r_len = _best(r2l, r2l_lp, new_r2l, r2l_end_id)
        l2r, r2l = new_l2r, new_r2l
        take_l2r = l_fin & (l_score >= r_score)
        take_r2l = ~take_l2r & r_fin & (r_score >= l_score)
        last = l2r.step >= max_len
        # After L steps: the better of the two bests (L2R on a tie, as it is checked first).
        pick_l2r = take_l2r | (~take_r2l & last & (l_score >= r_score))
        stop = ~done & (take_l2r | take_r2l | last)
        chosen = (jnp.where(pick_l2r, l_score, r_score),
                  jnp.where(pick_l2r[:, None], l_seq, r_seq),
                  jnp.where(pick_l2r, l_len, r_len),
                  jnp.where(pick_l2r, 0, 1).astype(jnp.int32),
                  jnp.where(pick_l2r, l_fin, r_fin), ~pick_l2r)
        result = tuple(jnp.where(stop.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
                       for new, old in zip(chosen, result))
        return l2r, r2l, done | stop, result

    def not_done(carry):
        return ~jnp.all(carry[2])

    l2r, _, _, result = jax.lax.while_loop(
        not_done, body, (l2r, r2l, jnp.zeros((batch_size,), bool), empty))
    scores, sequences, lengths, directions, finished, reverse = result
    sequences, lengths = _strip_and_orient(sequences, lengths, finished, reverse, pad_id)
    return BidirectionalResult(sequences, lengths, scores, directions, finished, l2r.step)


def reference_bidirectional_beam_search(pair_probs_fn: Callable, *, batch_size: int,
                                        beam_size: int, max_len: int, l2r_start_id: int,
                                        l2r_end_id: int, r2l_start_id: int, r2l_end_id: int,
                                        forbidden: tuple[int, ...] = (), min_len: int = 0,
                                        no_repeat_ngram_size: int = 0) -> list[dict]:
    """`bidirectional_beam_search` in plain Python, re-running the model on whole prefixes.

    Args:
      pair_probs_fn: ``(b, l2r_prefix, r2l_prefix) -> (l2r_probs (V,), r2l_probs (V,))``
        for batch element b, with prefixes as lists of ids starting with their start id.
      other arguments: as `bidirectional_beam_search`.

    Returns:
      one dict per batch element: "tokens" (list, reading order, no start or end),
      "score", "direction" (0 or 1), "finished".
    """
    import numpy as np

    def allowed(prefix, token, start_id, end_id):
        generated = prefix[1:]
        if token == start_id or token in forbidden:
            return False
        if token == end_id and len(generated) < min_len:
            return False
        n = no_repeat_ngram_size
        if n > 0:
            gram = tuple(generated[len(generated) - n + 1:]) + (token,) if n > 1 else (token,)
            if len(generated) >= n - 1 and any(
                    tuple(generated[p:p + n]) == gram for p in range(len(generated) - n + 1)):
                return False
        return True

    results = []
    for b in range(batch_size):
        alive = {0: [([l2r_start_id], 0.0)], 1: [([r2l_start_id], 0.0)]}
        finished = {0: [], 1: []}
        ids = {0: (l2r_start_id, l2r_end_id), 1: (r2l_start_id, r2l_end_id)}
        chosen = None
        for _ in range(max_len):
            pairs = {(a, c): pair_probs_fn(b, alive[0][a][0], alive[1][c][0])
                     for a in range(len(alive[0])) for c in range(len(alive[1]))}
            new_alive = {}
            for d in (0, 1):
                candidates, ends = [], []
                for own, (prefix, score) in enumerate(alive[d]):
                    others = range(len(alive[1 - d]))
                    key = (lambda o: (own, o)) if d == 0 else (lambda o: (o, own))  # noqa
                    probs = np.mean([pairs[key(o)][d] for o in others], axis=0)
                    for token, p in enumerate(probs):
                        if not allowed(prefix, token, *ids[d]):
                            continue
                        entry = (prefix + [token], score + float(np.log(p + 1e-6)))
                        (ends if token == ids[d][1] else candidates).append(entry)
                finished[d] = sorted(ends, key=lambda e: -e[1])[:1]  # this step's only
                new_alive[d] = sorted(candidates, key=lambda e: -e[1])[:beam_size]
            alive = new_alive
            best = {}
            for d in (0, 1):
                top_alive = max((s for _, s in alive[d]), default=-np.inf)
                top_finished = finished[d][0][1] if finished[d] else -np.inf
                if finished[d] and top_finished >= top_alive:
                    best[d] = (finished[d][0][0], top_finished, True)
                else:
                    best[d] = (max(alive[d], key=lambda e: e[1])[0], top_alive, False)
            for d in (0, 1):
                if best[d][2] and best[d][1] >= best[1 - d][1]:
                    chosen = (d, best[d])
                    break
            if chosen:
                break
        if chosen is None:
            d = 0 if best[0][1] >= best[1][1] else 1
            chosen = (d, best[d])
        d, (prefix, score, is_finished) = chosen
        tokens = prefix[1:-1] if is_finished else prefix[1:]
        results.append({"tokens": tokens[::-1] if d else tokens, "score": score,
                        "direction": d, "finished": is_finished})
    return results
