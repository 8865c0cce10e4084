"""Training, scoring and generation for the bidirectional-decoder headline model.

Training is teacher forcing in both directions (docs/headlines.md §3): each decoder predicts
its own sequence shifted by one, the loss is the mean of the two directions' masked token
cross-entropies. With ``two_pass.first_workdir`` the states each decoder exposes to the
other come from a first model's own titles for the training texts (SB-NMT's second pass).
After training the best checkpoint (lowest held-out loss) decodes the test split with
``decode.kind`` and the titles are scored with character ROUGE and BLEU (experiments.text).
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import configs, data, evaluation, text, trainer
from experiments.headlines import config as headline_config
from experiments.headlines import decode
from experiments.headlines import input_pipeline as pipeline
from models.seq2seq import HeadlineSeq2Seq


def build_model(config, vocab_size: int) -> HeadlineSeq2Seq:
    m = config.model
    return HeadlineSeq2Seq(vocab_size=vocab_size, embed_dim=m.embed_dim,
                           encoder_units=m.encoder_units, decoder_units=m.decoder_units,
                           heads=m.heads, head_dim=m.head_dim,
                           modulation_dim=m.modulation_dim, interaction=m.interaction,
                           dtype=trainer.compute_dtype(config.trainer))


def make_optimizer(config) -> optax.GradientTransformation:
    return optax.adam(config.optimizer.learning_rate, eps=config.optimizer.eps)


def token_cross_entropy(log_probs, sequences):
    """Per-example summed CE of sequences[:, 1:] under log_probs[:, :-1], and token counts.

    Args:
      log_probs: (B, T − 1, V) float32, the model's outputs on sequences[:, :-1].
      sequences: (B, T) int, a direction's full sequence (start, title, end, padding).

    Returns:
      (ce_sum (B,), tokens (B,)) float32.
    """
    targets = sequences[:, 1:]
    mask = (targets != pipeline.PAD).astype(jnp.float32)
    token_lp = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return -jnp.sum(token_lp * mask, axis=1), jnp.sum(mask, axis=1)


def forward(model, params, batch, *, swap_context: bool = False):
    """Both directions' (ce_sum, tokens) for a batch; context ids when the batch has them.

    ``swap_context`` (the leakage diagnostic) gives each decoder the other direction's
    states computed from the *next* example's title instead of its own.
    """
    l2r, r2l = batch["l2r"], batch["r2l"]
    l2r_context, r2l_context = batch.get("l2r_context"), batch.get("r2l_context")
    if swap_context:
        l2r_context, r2l_context = jnp.roll(l2r, 1, axis=0), jnp.roll(r2l, 1, axis=0)
    cut = lambda ids: None if ids is None else ids[:, :-1]  # noqa: E731
    l2r_lp, r2l_lp = model.apply({"params": params}, batch["text_ids"], l2r[:, :-1],
                                 r2l[:, :-1], l2r_context_ids=cut(l2r_context),
                                 r2l_context_ids=cut(r2l_context))
    return token_cross_entropy(l2r_lp, l2r), token_cross_entropy(r2l_lp, r2l)


def loss_fn(params, model, batch):
    """Mean over the two directions of each direction's mean token CE (the post)."""
    (l2r_ce, l2r_n), (r2l_ce, r2l_n) = forward(model, params, batch)
    l2r_loss = jnp.sum(l2r_ce) / jnp.maximum(jnp.sum(l2r_n), 1.0)
    r2l_loss = jnp.sum(r2l_ce) / jnp.maximum(jnp.sum(r2l_n), 1.0)
    return (l2r_loss + r2l_loss) / 2.0, {"l2r_loss": l2r_loss, "r2l_loss": r2l_loss}


def make_train_step(model, optimizer):
    def train_step(state, batch, key):
        del key  # no dropout
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], model, batch)
        params, opt_state, norms = trainer.apply_updates(state["params"], grads,
                                                         state["opt_state"], optimizer)
        return {"params": params, "opt_state": opt_state}, {"loss": loss, **metrics, **norms}
    return train_step


def make_init_state(model, optimizer, text_len: int, title_len: int):
    def init_state(key):
        titles = jnp.zeros((1, title_len - 1), jnp.int32)
        params = model.init(key, jnp.zeros((1, text_len), jnp.int32), titles,
                            titles)["params"]
        return {"params": params, "opt_state": optimizer.init(params)}
    return init_state


def make_loss_predict_fn(model, interaction: bool):
    """Jitted (params, batch) -> per-example CE sums and token counts (+ swapped context)."""
    def predict(params, batch):
        (l2r_ce, l2r_n), (r2l_ce, r2l_n) = forward(model, params, batch)
        out = {"l2r_ce": l2r_ce, "r2l_ce": r2l_ce, "l2r_n": l2r_n, "r2l_n": r2l_n}
        if interaction:
            (l2r_sw, _), (r2l_sw, _) = forward(model, params, batch, swap_context=True)
            out.update(l2r_ce_swapped=l2r_sw, r2l_ce_swapped=r2l_sw)
        return out
    return jax.jit(predict)


def loss_metrics(predictions) -> dict[str, float]:
    """Held-out teacher-forced losses; with interaction, the leakage diagnostic too.

    "loss" is the training objective's mean of the two directions. "*_swapped" are the same
    losses when each decoder reads the other direction's states built from another
    example's title; "leak_gap" = swapped − gold: how much the decoders lean on the other
    direction having read the gold title (docs/headlines.md §4).
    """
    out = {}
    for d in ("l2r", "r2l"):
        tokens = float(np.sum(predictions[f"{d}_n"]))
        out[f"{d}_loss"] = float(np.sum(predictions[f"{d}_ce"])) / tokens
        if f"{d}_ce_swapped" in predictions:
            out[f"{d}_loss_swapped"] = float(np.sum(predictions[f"{d}_ce_swapped"])) / tokens
    out["loss"] = (out["l2r_loss"] + out["r2l_loss"]) / 2.0
    if "l2r_loss_swapped" in out:
        out["leak_gap"] = (out["l2r_loss_swapped"] + out["r2l_loss_swapped"]) / 2 - out["loss"]
    return {"loss": out.pop("loss"), **out}


# ------------------------------------------------------------------------------------------
# Data.


def _read(path, config) -> pipeline.Pairs:
    pairs, skipped = pipeline.read_pairs(path, skip_bad=config.data.skip_bad)
    if len(skipped):
        print(skipped.summary(), flush=True)
    return pairs


def load_splits(config, workdir: pathlib.Path):
    """(train, valid, test) `Pairs` from the config (generated when data.path is "")."""
    seed = config.trainer.seed
    if config.data.path:
        train_pairs = _read(config.data.path, config)
    else:
        train_pairs = pipeline.generated_pairs(config.data.generated_count, seed)
        test = pipeline.generated_pairs(config.data.generated_test_count, seed + 1)
        path = workdir / "generated_test.tsv"
        path.write_text("".join(f"{t}\t{x}\n" for t, x in zip(test.titles, test.texts)),
                        encoding="utf-8")
        print(f"data: {len(train_pairs)} generated pairs (title = the 【】 span + its first "
              f"character); test pairs written to {path}", flush=True)
    if config.data.valid_path:
        valid = _read(config.data.valid_path, config)
    else:
        train_pairs, valid = pipeline.split_off(train_pairs, config.data.valid_fraction, seed)
    if config.data.test_path:
        test = _read(config.data.test_path, config)
    elif not config.data.path:
        test = pipeline.read_pairs(workdir / "generated_test.tsv")[0]
    else:
        test = valid
    return train_pairs, valid, test


def encode_pairs(vocab, pairs: pipeline.Pairs, text_len: int, title_chars: int) -> dict:
    l2r, r2l = pipeline.encode_titles(vocab, pairs.titles, title_chars)
    return {"text_ids": pipeline.encode_texts(vocab, pairs.texts, text_len),
            "l2r": l2r, "r2l": r2l}


def decode_texts(model, params, vocab, texts, config, *, text_len: int, kind: str,
                 **overrides) -> tuple[list[str], np.ndarray]:
    """Titles for ``texts`` with the config's decoder; also each title's direction (0/1)."""
    d = config.decode
    options = dict(kind=kind, beam_size=d.beam_size, max_len=d.max_len,
                   direction=d.direction, alpha=d.alpha, min_len=d.min_len,
                   no_repeat_ngram_size=d.no_repeat_ngram_size, stop_rule=d.stop_rule)
    options.update(overrides)
    fn = decode.jitted_search(model, **options)
    ids = pipeline.encode_texts(vocab, texts, text_len)
    out = evaluation.predict_in_batches(fn, params, {"text_ids": ids}, d.batch_size)
    titles = [vocab.decode(row[:n]) for row, n in zip(out["sequences"], out["lengths"])]
    return titles, out["directions"]


def score_titles(hypotheses, references) -> dict[str, float]:
    """ROUGE-1/2/L (character), BLEU (sacrebleu zh), first/last-4 accuracy; all × 100."""
    return {**text.character_rouge(hypotheses, references),
            "bleu": text.bleu(hypotheses, references),
            **text.end_accuracy(hypotheses, references)}


# ------------------------------------------------------------------------------------------
# Modes.


def run(config, workdir: pathlib.Path) -> dict[str, float]:
    """Dispatches on `config.mode`: train, eval or generate."""
    configs.require_choice(config, "mode", MODES)
    return MODES[config.mode](config, workdir)


def _pseudo_titles(config, train_pairs, text_len: int, title_chars: int):
    """The first model's titles for the training texts, as L2R/R2L context ids."""
    first = pathlib.Path(config.two_pass.first_workdir)
    saved = configs.read_trained_config(first)
    first_config = headline_config.get_config()
    with first_config.unlocked():
        first_config.model.update(saved["model"])
    vocab, model, params, _ = load_trained(first_config, first)
    kind = "bi_beam" if model.interaction else "beam"
    print(f"two-pass: decoding {len(train_pairs)} training texts with {first} ({kind}, "
          f"beam {config.two_pass.beam_size})", flush=True)
    titles, _ = decode_texts(model, params, vocab, train_pairs.texts, config,
                             text_len=text_len, kind=kind, beam_size=config.two_pass.beam_size)
    l2r, r2l = pipeline.encode_titles(vocab, titles, title_chars)
    return vocab, l2r, r2l


def run_training(config, workdir: pathlib.Path) -> dict[str, float]:
    """Trains, keeps the lowest held-out loss, decodes and scores the test split."""
    train_pairs, valid, test = load_splits(config, workdir)
    text_len = min(config.data.max_text_len, max(len(t) for t in train_pairs.texts))
    title_chars = min(config.data.max_title_len, max(len(t) for t in train_pairs.titles))
    vocab = pipeline.Vocabulary.build(train_pairs.texts + train_pairs.titles,
                                      config.data.min_count)
    context = None
    if config.two_pass.first_workdir:
        vocab, *context = _pseudo_titles(config, train_pairs, text_len, title_chars)
    print(f"data: train {len(train_pairs)}, valid {len(valid)}, test {len(test)} pairs; "
          f"vocabulary {vocab.size}; text ≤ {text_len}, title ≤ {title_chars} chars",
          flush=True)
    trainer.write_run_file(workdir, "vocab.json", vocab.to_json())
    trainer.write_run_file(workdir, "model.json", json.dumps(
        {"vocab_size": vocab.size, "text_len": text_len, "title_chars": title_chars}) + "\n")

    model = build_model(config, vocab.size)
    optimizer = make_optimizer(config)
    arrays = encode_pairs(vocab, train_pairs, text_len, title_chars)
    if context is not None:
        arrays["l2r_context"], arrays["r2l_context"] = context
    batches = data.EpochBatches(arrays, batch_size=min(config.batch_size, len(train_pairs)),
                                seed=config.trainer.seed)
    evaluator = evaluation.Evaluator(
        predict_fn=make_loss_predict_fn(model, config.model.interaction),
        inputs=encode_pairs(vocab, valid, text_len, title_chars),
        batch_size=config.eval_batch_size,
        score_fn=lambda predictions, state: loss_metrics(predictions))
    init_state = make_init_state(model, optimizer, text_len, title_chars + 2)
    task = trainer.Task(init_state=init_state, train_step=make_train_step(model, optimizer),
                        batches=batches, evaluate=evaluator,
                        fingerprint={
                            "config": trainer.config_fingerprint(config, ignore=(
                                "mode", "data.skip_bad", "data.test_path", "data.eval_path",
                                "decode", "generate", "eval_batch_size")),
                            "vocabulary": vocab.digest(),
                            "train_data": trainer.array_digest(*arrays.values())})
    result = trainer.train(task, config.trainer, workdir)
    template = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    params = trainer.load_state(workdir, template, step="best")["params"]
    held_out = evaluator({"params": params})
    kind = headline_config.decode_kind(config)
    hypotheses, _ = decode_texts(model, params, vocab, test.texts, config, text_len=text_len,
                                 kind=kind)
    scores = score_titles(hypotheses, test.titles)
    summary = {**{k: scores[k] for k in ("rougeL", "rouge1", "rouge2", "bleu")},
               "first4": scores["first4"], "last4": scores["last4"],
               **{f"valid_{k}": v for k, v in held_out.items()},
               "best_step": result.best_step, "decode_kind": kind}
    _write_samples(workdir / "test_titles.tsv", test, hypotheses)
    trainer.update_summary(workdir, results={k: v for k, v in summary.items()
                                             if not isinstance(v, str)})
    for title, text_ in list(zip(hypotheses, test.texts))[:3]:
        print(f"  {text_[:40]}… → {title}", flush=True)
    print(json.dumps(summary, ensure_ascii=False, allow_nan=False), flush=True)
    return summary


def _write_samples(path: pathlib.Path, pairs: pipeline.Pairs, hypotheses) -> None:
    if jax.process_index() == 0:
        path.write_text("generated\tgold\ttext\n" + "".join(
            f"{h}\t{g}\t{t}\n" for h, g, t in zip(hypotheses, pairs.titles, pairs.texts)),
            encoding="utf-8")


def load_trained(config, workdir: pathlib.Path):
    """(vocabulary, model, best params, sizes) of a trained workdir; reads, never writes.

    Raises:
      experiments.configs.NotATrainedRun: when the workdir lacks what training writes.
    """
    workdir = pathlib.Path(workdir)
    for name in ("vocab.json", "model.json"):
        if not (workdir / name).is_file():
            raise configs.NotATrainedRun(f"{workdir / name} is missing: is {workdir} the "
                                         "workdir of a finished training run?")
    vocab = pipeline.Vocabulary.load(workdir / "vocab.json")
    sizes = json.loads((workdir / "model.json").read_text())
    model = build_model(config, sizes["vocab_size"])
    template = jax.eval_shape(make_init_state(model, make_optimizer(config), sizes["text_len"],
                                              sizes["title_chars"] + 2),
                              jax.random.PRNGKey(0))
    params = trainer.load_state(workdir, template, step="best")["params"]
    return vocab, model, params, sizes


def run_evaluation(config, workdir: pathlib.Path) -> dict[str, float]:
    """Decodes `data.eval_path` with `decode.kind` and scores it; last line is JSON."""
    pairs = _read(config.data.eval_path, config)
    kind = headline_config.decode_kind(config)
    vocab, model, params, sizes = load_trained(config, workdir)
    hypotheses, directions = decode_texts(model, params, vocab, pairs.texts, config,
                                          text_len=sizes["text_len"], kind=kind)
    metrics = {**score_titles(hypotheses, pairs.titles),
               "r2l_share": 100.0 * float(np.mean(directions))}
    predictions = evaluation.predict_in_batches(
        make_loss_predict_fn(model, config.model.interaction), params,
        encode_pairs(vocab, pairs, sizes["text_len"], sizes["title_chars"]),
        config.eval_batch_size)
    metrics.update(loss_metrics(predictions))
    print(f"{config.data.eval_path}: {len(pairs)} pairs, decode {kind}", flush=True)
    print(json.dumps(metrics, allow_nan=False), flush=True)
    return metrics


def run_generation(config, workdir: pathlib.Path, stdin=None, stdout=None) -> dict[str, float]:
    """Reads texts (one per line) and writes one title per line with `decode.kind`."""
    stdout = stdout or sys.stdout
    if config.generate.input:
        texts = pipeline.read_texts(config.generate.input)
    else:
        texts = [line.strip() for line in (stdin or sys.stdin) if line.strip()]
    if not texts:
        raise data.RecordError(config.generate.input or "<stdin>", None, None, "no texts")
    kind = headline_config.decode_kind(config)
    vocab, model, params, sizes = load_trained(config, workdir)
    titles, _ = decode_texts(model, params, vocab, texts, config, text_len=sizes["text_len"],
                             kind=kind)
    for title in titles:
        print(title, file=stdout)
    stdout.flush()
    return {"generated": float(len(titles))}


MODES = {"train": run_training, "eval": run_evaluation, "generate": run_generation}
