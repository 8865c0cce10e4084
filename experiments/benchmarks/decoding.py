"""Headline decoding: the cached bidirectional beam search against the post's re-run per step,
and decoding throughput of greedy, beam and bidirectional beam search.

Both parts decode with the headline model at the post's sizes (docs/headlines.md §2: embedding
128, BiLSTM 64 × 2, decoders LSTM 128 × 2, attention 8 × 16) and random weights; the work of
a search does not depend on what the weights say, as long as every search runs the same
number of steps, so every search here forbids the end token until its last step
(``min_len = max_len − 1``).

* Cached vs re-run (same model, same outputs, checked): `decode.make_pair_step` (one LSTM
  step per hypothesis and direction, attention over a fixed-length key/value cache) against
  `decode.make_rerun_pair_step` (the post's way: the whole model, encoder included, run on
  all K × K prefix pairs at every step), beam 3, 32 and 64 steps. Target: ≥ 10× at 64 steps.
  Under jit the re-run has fixed shapes, so it runs the decoders over all L positions at
  every step where the post ran the n + 1 tokens of the prefix at step n. One re-run step
  (the model on the B·K² pairs) is timed at prefix lengths 1 and L, and the re-run's time
  scaled by their mean over their value at L gives the post's cost, assuming a step's cost
  linear in the prefix length; that estimate is reported against the cached search too.
* Throughput at batch 64 and 32 steps: greedy and beam 3 with the unidirectional model,
  bidirectional beam 3 with the interacting one; headlines per second.
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import harness
from experiments.headlines import decode
from models.seq2seq import HeadlineSeq2Seq

VOCAB = 2000            # about the LCSTS PART II vocabulary at min_count 32 (1,956)
TEXT_LEN = 128          # LCSTS PART II texts are about 100–150 characters
FULL = dict(batch=4, steps=(32, 64), throughput_batch=64, throughput_steps=32)
QUICK = dict(batch=2, steps=(8, 16), throughput_batch=8, throughput_steps=8)
BEAM = 3
TARGET_SPEEDUP = 10.0


def _model_and_params(interaction: bool, text_len: int, seed: int = 0):
    model = HeadlineSeq2Seq(vocab_size=VOCAB, interaction=interaction)
    ids = jnp.zeros((1, text_len), jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), ids, ids[:, :8], ids[:, :8])
    return model, params["params"]


def _texts(batch: int, text_len: int, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, VOCAB, (batch, text_len)).astype(np.int32)
    lengths = rng.integers(text_len // 2, text_len + 1, batch)
    ids[np.arange(text_len)[None, :] >= lengths[:, None]] = 0
    return jnp.asarray(ids)


def _search(model, kind: str, steps: int, rerun: bool = False):
    def fn(params, text_ids):
        return decode.search(model, params, text_ids, kind=kind, beam_size=BEAM,
                             max_len=steps, min_len=steps - 1, rerun=rerun)
    return fn


def _full_model(model):
    """(params, texts (N, Tx), prefixes (N, n)) -> both directions' log-probs: one re-run."""
    def fn(params, texts, prefixes):
        return model.apply({"params": params}, texts, prefixes, prefixes)
    return fn


def _prefix_faithful_share(report: harness.Report, model, params, texts, steps: int) -> float:
    """Mean over n = 1…L of one re-run step's time at prefix length n, over its time at L.

    Times the model on the B·K² pairs at prefix lengths 1 and L and interpolates linearly.
    """
    pairs = jnp.repeat(texts, BEAM * BEAM, axis=0)
    rng = np.random.default_rng(2)
    group = (f"one re-run step of the {steps}-step search, {pairs.shape[0]} pairs, "
             f"text {texts.shape[1]}")
    times = {}
    for length in (steps, 1):
        prefixes = jnp.asarray(rng.integers(4, VOCAB, (pairs.shape[0], length)), jnp.int32)
        times[length] = report.time_jax(group, f"prefix length {length}", _full_model(model),
                                        params, pairs, prefixes, baseline=length == steps,
                                        repeats=5).median_s
    return (times[1] + times[steps]) / (2.0 * times[steps])


def run(report: harness.Report, quick: bool) -> None:
    sizes = QUICK if quick else FULL
    model, params = _model_and_params(True, TEXT_LEN)
    texts = _texts(sizes["batch"], TEXT_LEN)
    for steps in sizes["steps"]:
        group = f"bi beam {BEAM}, {steps} steps, batch {sizes['batch']}, text {TEXT_LEN}"
        rerun = report.time_jax(group, "re-run per step (the post)",
                                _search(model, "bi_beam", steps, rerun=True), params, texts,
                                baseline=True, repeats=3)
        cached = report.time_jax(group, "cached step", _search(model, "bi_beam", steps),
                                 params, texts, repeats=3)
        same = [jax.device_get(jax.jit(_search(model, "bi_beam", steps, rerun=r))(params,
                                                                                  texts))
                for r in (True, False)]
        identical = all(np.array_equal(same[0][k], same[1][k]) for k in same[0])
        report.note(f"{steps} steps: cached and re-run outputs identical: {identical}")
        report.finding(f"bi beam {BEAM}, {steps} steps: re-run time / cached time",
                       rerun.median_s / cached.median_s, speed=True,
                       target=TARGET_SPEEDUP if steps == max(sizes["steps"]) else None)
        share = _prefix_faithful_share(report, model, params, texts, steps)
        report.finding(f"bi beam {BEAM}, {steps} steps: estimated re-run on prefixes (the "
                       "post's cost) / cached time", share * rerun.median_s / cached.median_s,
                       speed=True, detail=f"a prefix re-run costs {share:.2f} of the "
                       "fixed-length re-run (linear in the prefix length)")

    batch, steps = sizes["throughput_batch"], sizes["throughput_steps"]
    texts = _texts(batch, TEXT_LEN, seed=1)
    uni, uni_params = _model_and_params(False, TEXT_LEN)
    group = f"throughput, batch {batch}, {steps} steps, text {TEXT_LEN}"
    rows = [report.time_jax(group, "greedy (unidirectional)", _search(uni, "greedy", steps),
                            uni_params, texts, baseline=True, repeats=3),
            report.time_jax(group, f"beam {BEAM} (unidirectional)",
                            _search(uni, "beam", steps), uni_params, texts, repeats=3),
            report.time_jax(group, f"bi beam {BEAM}", _search(model, "bi_beam", steps),
                            params, texts, repeats=3)]
    for row in rows:
        report.finding(f"{row.impl}: headlines/s at batch {batch}", batch / row.median_s,
                       unit=" headlines/s")
