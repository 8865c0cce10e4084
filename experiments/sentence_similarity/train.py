"""Training, evaluation and FAQ search for the GRU + margin-softmax sentence encoder.

The model is a classifier over paraphrase groups (docs/sentence_similarity.md §1):
sentences → `SentenceEncoder` → unit vectors z → cosines to unit class centres → a margin
softmax (`kernels.margin_softmax`). After training the classifier is thrown away and z serves
open-set retrieval: validation groups were never classes, and every validation sentence is
ranked against the others (docs/sentence_similarity.md §5).
"""

import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import configs, data, evaluation, schedules, trainer
from experiments.sentence_similarity import input_pipeline, retrieval, synthetic
from kernels import margin_softmax
from models.sentence_encoder import SentenceClassifier


def build_model(config, vocab_size: int, num_classes: int) -> SentenceClassifier:
    """The seed's network with the config's sizes (docs/sentence_similarity.md §2)."""
    return SentenceClassifier(vocab_size=vocab_size, num_classes=num_classes,
                              embed_dim=config.model.embed_dim,
                              hidden_dim=config.model.hidden_dim,
                              final_state=config.model.final_state,
                              bidirectional=config.model.bidirectional,
                              pooling=config.model.pooling,
                              dropout=config.model.dropout,
                              dtype=trainer.compute_dtype(config.trainer))


DECAYS = ("constant", "cosine")


def learning_rate(config, num_steps: int) -> float | optax.Schedule:
    """The seed's constant rate, or its cosine decay to `final_fraction` of it over
    `num_steps` (config.optimizer.decay)."""
    peak = config.optimizer.learning_rate
    if config.optimizer.decay == "constant":
        return peak
    return schedules.warmup_cosine(peak, num_steps, warmup_steps=0,
                                   end_fraction=config.optimizer.final_fraction)


def make_optimizer(config, num_steps: int = 1) -> optax.GradientTransformation:
    """Keras Adam, then the unit-norm projection of the class centres.

    docs/index.md §2 items 5 and 6; docs/sentence_similarity.md §2 item 4. `num_steps` is
    the length of the run a decaying rate spans; the optimizer state's structure does not
    depend on it, so templates for loading may leave it out.
    """
    def is_class_kernel(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "classifier" in jax.tree_util.keystr(path), params)

    return optax.chain(
        optax.adam(learning_rate(config, num_steps), eps=config.optimizer.eps),
        optax.masked(margin_softmax.project_to_unit_norm(axis=0), is_class_kernel))


def classification_loss(params, model, token_ids, labels, loss_config, key=None):
    """Mean margin-softmax loss of one batch, and its accuracy where the cosines are formed.

    Args:
      params: the SentenceClassifier parameters.
      model: the SentenceClassifier.
      token_ids: (B, T) int32.
      labels: (B,) int32 class ids.
      loss_config: kind, scale, margin, chunk_size.
      key: the dropout rng; None runs the encoder without dropout.

    Returns:
      (loss, metrics): metrics has "train_accuracy" (of the plain cosine argmax) unless the
      chunked loss is used, which never forms the (B, C) cosines.
    """
    # The encoder runs in the model's compute dtype; cosines and the loss in float32.
    rngs = {} if key is None else {"dropout": key}
    z = model.apply({"params": params}, token_ids, train=key is not None, rngs=rngs,
                    method=SentenceClassifier.encode).astype(jnp.float32)
    kernel = params["classifier"]["kernel"]                        # [H, C]
    kwargs = dict(kind=loss_config.kind, scale=loss_config.scale, margin=loss_config.margin)
    if loss_config.chunk_size:
        losses = margin_softmax.chunked_margin_softmax_loss(
            z, kernel, labels, chunk_size=loss_config.chunk_size, **kwargs)
        return jnp.mean(losses), {}
    else:
        cos = z @ kernel                                           # [B, C]
        losses = margin_softmax.margin_softmax_loss(cos, labels, **kwargs)
        # "the target is the nearest centre", without an argmax (slow on XLA:CPU at 90k).
        target = jnp.take_along_axis(cos, labels[:, None], axis=-1)[:, 0]
        accuracy = jnp.mean(target >= jnp.max(cos, axis=-1))
    return jnp.mean(losses), {"train_accuracy": accuracy}


def make_train_step(model, optimizer, loss_config):
    """The pure `(state, batch, key) -> (state, metrics)` step the trainer jits."""
    def train_step(state, batch, key):
        grad_fn = jax.value_and_grad(classification_loss, has_aux=True)
        # The trainer's per-step key (fold_in(key, step)) drives dropout, if there is any.
        (loss, metrics), grads = grad_fn(state["params"], model, batch["token_ids"],
                                          batch["labels"], loss_config,
                                          key if model.dropout else None)
        params, opt_state, norms = trainer.apply_updates(
            state["params"], grads, state["opt_state"], optimizer)
        return ({"params": params, "opt_state": opt_state},
                {"loss": loss, **metrics, **norms})
    return train_step


def make_init_state(model, optimizer, maxlen: int, embedding_rows=None):
    """`key -> state`; `embedding_rows`: optional (ids [N], rows [N, D]) that replace those
    rows of the random embedding (`char_vectors.embedding_rows`): the pad and unknown
    rows and the characters the vectors lack keep their random values."""
    def init_state(key):
        params = model.init(key, jnp.zeros((1, maxlen), jnp.int32))["params"]
        if embedding_rows is not None:
            ids, rows = embedding_rows
            table = params["encoder"]["embedding"]["embedding"].at[ids].set(rows)
            params = {**params, "encoder": {**params["encoder"],
                                            "embedding": {"embedding": table}}}
        return {"params": params, "opt_state": optimizer.init(params)}
    return init_state


def encode(model, params, token_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, T) ids → (n, H) float32 unit sentence vectors, in batches (the last one padded)."""
    return evaluation.predict_in_batches(_encode_fn(model), params,
                                         {"token_ids": token_ids}, batch_size)


@functools.cache
def _encode_fn(model):
    """Jitted (params, {"token_ids": (B, T)}) -> (B, H) float32 unit vectors."""
    return jax.jit(lambda params, batch: model.apply(
        {"params": params}, batch["token_ids"],
        method=SentenceClassifier.encode).astype(jnp.float32))


def choose_threshold(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The cosine threshold for "answer or not" with the best F1 (docs/sentence_similarity.md §5).

    Each validation sentence queries the others; it is accepted when its nearest neighbour's
    cosine reaches the threshold. Precision: accepted queries whose nearest neighbour is a
    paraphrase. Recall: correctly answered queries over queries that have a paraphrase.
    """
    scores, indices = retrieval.nearest_neighbours(embeddings, 1)
    scores, correct = scores[:, 0], labels[indices[:, 0]] == labels
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    answerable = int(np.sum(counts[inverse] > 1))
    order = np.argsort(-scores)
    true_accepts = np.cumsum(correct[order])
    precision = true_accepts / np.arange(1, len(order) + 1)
    recall = true_accepts / max(answerable, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    return {"threshold": float(scores[order][best]), "precision": float(precision[best]),
            "recall": float(recall[best]), "f1": float(f1[best])}


def _data_path(config, workdir: pathlib.Path) -> pathlib.Path:
    if config.data.path:
        return pathlib.Path(config.data.path)
    path = workdir / "generated_groups.tsv"
    synthetic.write(path, num_items=config.data.generated_items)
    print(f"data: generated corpus ({config.data.generated_items} items × "
          f"{len(synthetic.INTENTS)} intents) written to {path}", flush=True)
    return path


def _read(path, config):
    groups, skipped = input_pipeline.read_groups(path, skip_bad=config.data.skip_bad)
    if len(skipped):
        print(skipped.summary(), flush=True)
    return groups


def run(config, workdir: pathlib.Path) -> dict[str, float]:
    """Dispatches on `config.mode`: train (default), eval or search (`MODES`).

    Raises:
      experiments.configs.ConfigError: for a mode not in `MODES`.
    """
    configs.require_choice(config, "mode", MODES)
    return MODES[config.mode](config, workdir)


def run_training(config, workdir: pathlib.Path) -> dict[str, float]:
    """Trains on the open-set split, keeps the best top-1 weights, writes the threshold."""
    path = _data_path(config, workdir)
    groups = _read(path, config)
    vocab = input_pipeline.Vocabulary.build(groups.sentences, config.data.min_count)
    split = input_pipeline.split_by_group(groups, config.data.train_fraction)
    print(f"data: {path}: train {input_pipeline.group_size_report(split.train)}, "
          f"valid {input_pipeline.group_size_report(split.valid)}, vocabulary {vocab.size}",
          flush=True)
    trainer.write_run_file(workdir, "vocab.json", vocab.to_json())
    trainer.write_run_file(workdir, "model.json", json.dumps(
        {"vocab_size": vocab.size, "num_classes": split.num_classes}) + "\n")

    model = build_model(config, vocab.size, split.num_classes)
    maxlen = config.data.maxlen
    train_ids = vocab.encode(split.train.sentences, maxlen)
    valid_ids = vocab.encode(split.valid.sentences, maxlen)
    valid_unknown = input_pipeline.unknown_characters(valid_ids)
    print(f"data: validation {input_pipeline.describe_unknown(valid_unknown)}", flush=True)
    batches = data.EpochBatches({"token_ids": train_ids, "labels": split.train_labels},
                                batch_size=config.batch_size, seed=config.trainer.seed)

    evaluator = evaluation.Evaluator(
        predict_fn=_encode_fn(model), inputs={"token_ids": valid_ids},
        batch_size=config.eval_batch_size,
        score_fn=lambda z, state: retrieval.retrieval_metrics(z, split.valid.group_ids))

    trainer_config = trainer.with_epoch_defaults(config.trainer, config.epochs,
                                                 batches.batches_per_epoch)
    optimizer = make_optimizer(config, trainer_config.num_steps)
    embedding_rows = None
    if config.model.embedding_init:
        # Imported on use: the package imports this module, and char_vectors is a command
        # (python -m), which runpy warns about when its package imported it first.
        from experiments.sentence_similarity import char_vectors

        *embedding_rows, message = char_vectors.load_embedding_rows(
            config.model.embedding_init, vocab, config.model.embed_dim,
            config.model.embedding_init_std)
        print(message, flush=True)
    task = trainer.Task(init_state=make_init_state(model, optimizer, maxlen, embedding_rows),
                        train_step=make_train_step(model, optimizer, config.loss),
                        batches=batches, evaluate=evaluator,
                        fingerprint=run_fingerprint(config, vocab, train_ids,
                                                    split.train_labels))
    result = trainer.train(task, trainer_config, workdir)
    template = jax.eval_shape(make_init_state(model, optimizer, maxlen), jax.random.PRNGKey(0))
    best = trainer.load_state(workdir, template, step="best")
    z = evaluator.predict(best)
    metrics = retrieval.retrieval_metrics(z, split.valid.group_ids)
    threshold = choose_threshold(z, split.valid.group_ids)
    (workdir / "threshold.json").write_text(json.dumps(threshold, allow_nan=False) + "\n")
    summary = {**metrics, "best_step": result.best_step, **{
        f"faq_{k}": v for k, v in threshold.items()},
        "valid_unknown_share": valid_unknown["unknown_share"],
        "valid_sentences_with_unknown_share": valid_unknown["sentences_with_unknown_share"]}
    trainer.update_summary(workdir, results=summary)
    print(json.dumps(summary, allow_nan=False), flush=True)
    return summary


def run_fingerprint(config, vocab, train_ids: np.ndarray, train_labels: np.ndarray) -> dict:
    """What the checkpoints depend on: the config's model, loss and optimiser fields, the
    vocabulary and the training data (so a rerun on changed data cannot reuse them)."""
    return {"config": trainer.config_fingerprint(config, ignore=(
                "mode", "data.path", "data.eval_path", "data.skip_bad", "search",
                "eval_batch_size")),
            "vocabulary": vocab.digest(),
            "train_data": trainer.array_digest(train_ids, train_labels)}


def _load_trained(config, workdir: pathlib.Path):
    """The vocabulary, model and best parameters of a trained workdir; reads, never writes.

    `config` must hold the training run's model fields: launch.py merges them in from
    WORKDIR/config.json (`configs.merge_trained` with the `TRAINED_FIELDS` of
    `experiments.sentence_similarity.config`).

    Raises:
      experiments.configs.NotATrainedRun: when the workdir lacks what training writes.
      experiments.trainer.CheckpointError: when the best checkpoint is missing or unreadable.
    """
    workdir = pathlib.Path(workdir)
    for name in ("vocab.json", "model.json"):
        if not (workdir / name).is_file():
            raise configs.NotATrainedRun(f"{workdir / name} is missing: is {workdir} the "
                                         "workdir of a finished training run?")
    vocab = input_pipeline.Vocabulary.load(workdir / "vocab.json")
    sizes = json.loads((workdir / "model.json").read_text())
    model = build_model(config, sizes["vocab_size"], sizes["num_classes"])
    optimizer = make_optimizer(config)
    template = jax.eval_shape(make_init_state(model, optimizer, config.data.maxlen),
                              jax.random.PRNGKey(0))
    state = trainer.load_state(workdir, template, step="best")
    return vocab, model, state["params"]


def run_evaluation(config, workdir: pathlib.Path) -> dict[str, float]:
    """Scores a trained workdir on `config.data.eval_path`; the last line printed is JSON.

    Before it, a line reports the file's unknown characters
    (`input_pipeline.unknown_characters`), so a user sees when the text is out of the
    vocabulary's domain. Writes nothing: a finished, read-only workdir can be scored.

    Raises:
      experiments.data.RecordError: for a malformed groups file.
      experiments.sentence_similarity.retrieval.NothingToRetrieve: when no group of the file
        has two sentences (before the model is loaded).
    """
    groups = _read(config.data.eval_path, config)
    retrieval.require_relevant_items(groups.group_ids, config.data.eval_path)
    vocab, model, params = _load_trained(config, workdir)
    report = input_pipeline.group_size_report(groups)
    token_ids = vocab.encode(groups.sentences, config.data.maxlen)
    unknown = input_pipeline.unknown_characters(token_ids)
    z = encode(model, params, token_ids, config.eval_batch_size)
    metrics = retrieval.retrieval_metrics(z, groups.group_ids)
    print(f"{config.data.eval_path}: {report}")
    # Text unlike the training corpus shows here first: its characters map to one id.
    print(f"{config.data.eval_path}: {input_pipeline.describe_unknown(unknown)}")
    print(json.dumps(metrics, allow_nan=False), flush=True)
    return metrics


def run_search(config, workdir: pathlib.Path, stdin=None, stdout=None) -> dict[str, float]:
    """FAQ search: stored questions encoded once, queries from stdin, nearest answers.

    Each query prints its `config.search.top` nearest stored questions with their cosines
    and "accept" or "reject" by the threshold chosen on validation (threshold.json). Writes
    nothing to the workdir.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    threshold_file = pathlib.Path(workdir) / "threshold.json"
    if not threshold_file.is_file():
        raise configs.NotATrainedRun(f"{threshold_file} is missing: is {workdir} the workdir "
                                     "of a finished training run?")
    threshold = json.loads(threshold_file.read_text())
    vocab, model, params = _load_trained(config, workdir)
    questions = [line.strip() for line in data.read_lines(config.search.questions)
                 if line.strip()]
    if not questions:
        raise data.RecordError(config.search.questions, None, None, "no questions")
    stored = encode(model, params, vocab.encode(
        [input_pipeline.normalize(q) for q in questions], config.data.maxlen),
        config.eval_batch_size)
    print(f"{len(questions)} stored questions; accept at cosine ≥ "
          f"{threshold['threshold']:.4f} (validation precision {threshold['precision']:.3f},"
          f" recall {threshold['recall']:.3f})", file=stdout, flush=True)
    answered = 0
    for query in stdin:
        query = query.strip()
        if not query:
            continue
        z = encode(model, params, vocab.encode([input_pipeline.normalize(query)],
                                               config.data.maxlen), 1)
        cosines = stored @ z[0]
        best = np.argsort(-cosines)[:config.search.top]
        verdict = "accept" if cosines[best[0]] >= threshold["threshold"] else "reject"
        answered += verdict == "accept"
        print(f"{query}\t{verdict}", file=stdout)
        for index in best:
            print(f"  {cosines[index]:.4f}\t{questions[index]}", file=stdout)
        stdout.flush()
    return {"accepted": float(answered)}


# config.mode → what runs; `config.validate` checks the mode against this table.
MODES = {"train": run_training, "eval": run_evaluation, "search": run_search}
