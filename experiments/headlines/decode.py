"""Decoding the headline model under jit: greedy, beam, bidirectional beam, rescoring.

Every decoder is a jitted ``(params, text_ids (B, Tx)) -> {"sequences": (B, L) int32,
"lengths": (B,) int32, "directions": (B,) int32}`` with titles in reading order and no start
or end token (docs/headlines.md §5):

* ``greedy`` and ``beam``: one decoder (``decode.direction``, L2R by default) through
  `kernels.decoding.greedy_search` / `beam_search`, its LSTM states cached per hypothesis;
  the model must be the unidirectional one (``model.interaction=False``);
* ``bi_beam``: the post's synchronous bidirectional beam search
  (`kernels.decoding.bidirectional_beam_search`) with the incremental pair step
  (`make_pair_step`); `make_rerun_pair_step` is the post's way, the whole model re-run on
  every prefix pair each step, kept as the reference and the benchmark's baseline;
* ``rescore``: the L2R beam's n-best list re-ranked by the mean of its L2R and R2L
  log-probabilities (the R2L decoder teacher-forced on each reversed hypothesis).
"""

import functools

import jax
import jax.numpy as jnp

from experiments.headlines.input_pipeline import END, PAD, START, UNK
from kernels import decoding
from models.seq2seq import HeadlineSeq2Seq

KINDS = ("greedy", "beam", "bi_beam", "rescore")
DIRECTION_IDS = {"l2r": (START, END), "r2l": (END, START)}  # (start, end) per direction


def _apply(model, params, method, *args):
    return model.apply({"params": params}, *args, method=method)


def _encode(model, params, text_ids):
    encoded = _apply(model, params, HeadlineSeq2Seq.encode, text_ids)
    return encoded


def make_uni_step(model: HeadlineSeq2Seq, params, encoded, direction: str):
    """``step_fn(cache, tokens (N,)) -> (log_probs (N, V), cache)`` of one decoder.

    N = B·K for any K; pad, unknown and the direction's start id are forbidden.
    """
    batch = encoded.x.shape[0]
    text_kv = _apply(model, params, HeadlineSeq2Seq.text_keys_values, direction, encoded)
    start_id = DIRECTION_IDS[direction][0]

    def step_fn(cache, tokens):
        beams = tokens.shape[0] // batch
        x_max = jnp.repeat(encoded.x_max, beams, axis=0)
        y, cache = _apply(model, params, HeadlineSeq2Seq.decoder_step, direction, cache,
                          tokens, x_max, jnp.int32(0))
        log_probs = _apply(model, params, HeadlineSeq2Seq.pair_log_probs, direction,
                           y.reshape(batch, beams, -1), None, jnp.int32(0), text_kv, encoded)
        log_probs = log_probs.reshape(batch * beams, -1)
        return log_probs.at[:, jnp.array([PAD, UNK, start_id])].set(-jnp.inf), cache

    return step_fn


def make_pair_step(model: HeadlineSeq2Seq, params, encoded, beam_size: int):
    """The incremental pair step of `kernels.decoding.bidirectional_beam_search`.

    Each direction advances its K hypotheses by one LSTM step and writes its keys and values
    at ``step``; every (L2R a, R2L c) pair then reads the other's cache at positions ≤ step.
    """
    batch = encoded.x.shape[0]
    text_kv = {d: _apply(model, params, HeadlineSeq2Seq.text_keys_values, d, encoded)
               for d in ("l2r", "r2l")}
    x_max = jnp.repeat(encoded.x_max, beam_size, axis=0)

    def pair_step(l2r_cache, r2l_cache, l2r_tokens, r2l_tokens, step):
        y_l, l2r_cache = _apply(model, params, HeadlineSeq2Seq.decoder_step, "l2r", l2r_cache,
                                l2r_tokens, x_max, step)
        y_r, r2l_cache = _apply(model, params, HeadlineSeq2Seq.decoder_step, "r2l", r2l_cache,
                                r2l_tokens, x_max, step)
        shape = (batch, beam_size, -1)
        l2r = _apply(model, params, HeadlineSeq2Seq.pair_log_probs, "l2r", y_l.reshape(shape),
                     r2l_cache, step, text_kv["l2r"], encoded)
        r2l = _apply(model, params, HeadlineSeq2Seq.pair_log_probs, "r2l", y_r.reshape(shape),
                     l2r_cache, step, text_kv["r2l"], encoded)
        return jnp.exp(l2r), jnp.swapaxes(jnp.exp(r2l), 1, 2), l2r_cache, r2l_cache

    return pair_step


def make_rerun_pair_step(model: HeadlineSeq2Seq, params, text_ids, beam_size: int):
    """The post's pair step: the whole model, encoder included, re-run on all K × K prefix
    pairs at every step (O(L) work per step). Caches are the (N, L) token histories."""
    batch = text_ids.shape[0]
    pairs = beam_size * beam_size
    texts = jnp.repeat(text_ids, pairs, axis=0)

    def pair_step(l2r_history, r2l_history, l2r_tokens, r2l_tokens, step):
        l2r_history = l2r_history.at[:, step].set(l2r_tokens)
        r2l_history = r2l_history.at[:, step].set(r2l_tokens)
        length = l2r_history.shape[1]
        l2r_ids = jnp.broadcast_to(l2r_history.reshape(batch, beam_size, 1, length),
                                   (batch, beam_size, beam_size, length))
        r2l_ids = jnp.broadcast_to(r2l_history.reshape(batch, 1, beam_size, length),
                                   (batch, beam_size, beam_size, length))
        l2r, r2l = model.apply({"params": params}, texts, l2r_ids.reshape(-1, length),
                               r2l_ids.reshape(-1, length))
        pick = lambda lp: jnp.exp(lp[:, step]).reshape(batch, beam_size, beam_size, -1)  # noqa
        return pick(l2r), pick(r2l), l2r_history, r2l_history

    return pair_step


def _strip_end(sequences, lengths, finished, reverse: bool):
    """(B, L) tokens with the end token → reading order without it."""
    flags = jnp.full(lengths.shape, reverse)
    return decoding._strip_and_orient(sequences, lengths, finished, flags, PAD)


def search(model: HeadlineSeq2Seq, params, text_ids, *, kind: str, beam_size: int,
           max_len: int, direction: str = "l2r", alpha: float = 0.0, min_len: int = 0,
           no_repeat_ngram_size: int = 0, stop_rule: str = "post",
           rerun: bool = False) -> dict:
    """Decodes a batch of texts (traceable; jit it with the keyword arguments static).

    Args:
      model, params: the headline model and its parameters.
      text_ids: (B, Tx) int32.
      kind: one of `KINDS`.
      beam_size: K (beam, bi_beam: per direction, rescore: the n-best size).
      max_len: L, the most tokens per title, end token included.
      direction: "l2r" or "r2l", the decoder of greedy and beam.
      alpha: GNMT length-penalty exponent of beam (and rescore's n-best).
      min_len, no_repeat_ngram_size: the searches' constraints.
      stop_rule: beam's, one of `kernels.decoding.STOP_RULES` ("post": the seed's, stop
        when a step's best candidate has ended). rescore always runs "exhaustive": it needs
        an n-best list of finished titles.
      rerun: bi_beam only: the post's full re-run per step instead of the cached step.

    Returns:
      {"sequences": (B, L), "lengths": (B,), "directions": (B,)}, int32.
    """
    batch = text_ids.shape[0]
    encoded = _encode(model, params, text_ids)
    constraints = dict(min_len=min_len, no_repeat_ngram_size=no_repeat_ngram_size)
    if kind == "bi_beam":
        if rerun:
            step = make_rerun_pair_step(model, params, text_ids, beam_size)
            history = jnp.zeros((batch, max_len), jnp.int32)
            caches = (history, history)
        else:
            step = make_pair_step(model, params, encoded, beam_size)
            cache = _apply(model, params, HeadlineSeq2Seq.init_cache, batch, max_len)
            caches = (cache, cache)
        result = decoding.bidirectional_beam_search(
            step, *caches, batch_size=batch, beam_size=beam_size, max_len=max_len,
            l2r_start_id=START, l2r_end_id=END, r2l_start_id=END, r2l_end_id=START,
            forbidden=(PAD, UNK), pad_id=PAD, **constraints)
        return {"sequences": result.sequences, "lengths": result.lengths,
                "directions": result.directions}
    if kind == "rescore":
        direction = "l2r"
    start_id, end_id = DIRECTION_IDS[direction]
    cache = _apply(model, params, HeadlineSeq2Seq.init_cache, batch, 0)
    step = make_uni_step(model, params, encoded, direction)
    directions = jnp.full((batch,), 0 if direction == "l2r" else 1, jnp.int32)
    if kind == "greedy":
        result = decoding.greedy_search(step, cache, jnp.full((batch,), start_id, jnp.int32),
                                        max_len=max_len, eos_id=end_id, pad_id=PAD,
                                        **constraints)
        sequences, lengths = _strip_end(result.sequences, result.lengths, result.finished,
                                        direction == "r2l")
        return {"sequences": sequences, "lengths": lengths, "directions": directions}
    result = decoding.beam_search(step, cache, jnp.full((batch,), start_id, jnp.int32),
                                  beam_size=beam_size, max_len=max_len, eos_id=end_id,
                                  alpha=alpha, pad_id=PAD, **constraints,
                                  stop_rule=stop_rule if kind == "beam" else "exhaustive")
    if kind == "beam":
        sequences, lengths = _strip_end(result.sequences[:, 0], result.lengths[:, 0],
                                        result.finished[:, 0], direction == "r2l")
        return {"sequences": sequences, "lengths": lengths, "directions": directions}
    best = rescore_choice(model, params, text_ids, result, alpha)
    rows = jnp.arange(batch)
    sequences, lengths = _strip_end(result.sequences[rows, best], result.lengths[rows, best],
                                    result.finished[rows, best], False)
    return {"sequences": sequences, "lengths": lengths, "directions": directions}


def rescore_choice(model: HeadlineSeq2Seq, params, text_ids, nbest: decoding.DecodeResult,
                   alpha: float = 0.0):
    """(B,) index of the n-best hypothesis with the best mean L2R + R2L log-probability,
    divided by the n-best search's length penalty lp(length with the end token) when
    `alpha` > 0 (so both rankings treat length alike).

    The R2L decoder reads [END] + reversed title + [START] under teacher forcing. Slots
    without a finished hypothesis are never chosen unless all are empty (then slot 0).

    Args:
      text_ids: (B, S) int32 texts; nbest: the L2R search's result, (B, K, L) sequences.
    """
    batch, beams, max_len = nbest.sequences.shape
    flat = nbest.sequences.reshape(batch * beams, max_len)
    lengths = (nbest.lengths - nbest.finished).reshape(-1)  # title tokens, no end
    titles, _ = decoding._strip_and_orient(flat, lengths + 1, jnp.ones_like(lengths, bool),
                                           jnp.ones_like(lengths, bool), PAD)  # reversed
    positions = jnp.arange(max_len + 1)[None, :]
    r2l_in = jnp.concatenate([jnp.full((batch * beams, 1), END, jnp.int32), titles], 1)
    r2l_in = jnp.where(positions == lengths[:, None] + 1, START, r2l_in)  # [N, L + 1]
    r2l_in = jnp.where(positions <= lengths[:, None] + 1, r2l_in, PAD)
    texts = jnp.repeat(text_ids, beams, axis=0)
    _, r2l_lp = model.apply({"params": params}, texts, r2l_in, r2l_in)
    targets = jnp.concatenate([r2l_in[:, 1:], jnp.zeros_like(r2l_in[:, :1])], 1)
    token_lp = jnp.take_along_axis(r2l_lp, targets[..., None], -1)[..., 0]
    r2l_score = jnp.sum(jnp.where(targets != PAD, token_lp, 0.0), axis=1).reshape(batch, beams)
    total = (nbest.log_probs + r2l_score) / 2.0 / decoding.length_penalty(nbest.lengths, alpha)
    total = jnp.where(nbest.finished, total, -jnp.inf)
    best = jnp.argmax(total, axis=1)
    return jnp.where(jnp.any(nbest.finished, axis=1), best, 0)


@functools.cache
def jitted_search(model: HeadlineSeq2Seq, **options):
    """``(params, text_ids) -> search(...)`` jitted once per model and options."""
    return jax.jit(lambda params, batch: search(model, params, batch["text_ids"], **options))
