"""Training, evaluation and FAQ search for the GRU + margin-softmax sentence encoder (SPEC §1).

The model is a classifier over paraphrase groups (SPEC §1.1): sentences → `SentenceEncoder`
→ unit vectors z → cosines to unit class centres → a margin softmax (`kernels.margin_softmax`).
After training the classifier is thrown away and z serves open-set retrieval: validation groups
were never classes, and every validation sentence is ranked against the others (SPEC §1.6).
"""

import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import trainer
from experiments.sentence_similarity import input_pipeline, retrieval, synthetic
from kernels import margin_softmax
from models.sentence_encoder import SentenceClassifier


def build_model(config, vocab_size: int, num_classes: int) -> SentenceClassifier:
    """The seed's network with the config's sizes (SPEC §1.3)."""
    return SentenceClassifier(vocab_size=vocab_size, num_classes=num_classes,
                              embed_dim=config.model.embed_dim,
                              hidden_dim=config.model.hidden_dim,
                              final_state=config.model.final_state)


def make_optimizer(config) -> optax.GradientTransformation:
    """Keras Adam (SPEC §0.1), then the unit-norm projection of the class centres (SPEC §1.3)."""
    def is_class_kernel(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "classifier" in jax.tree_util.keystr(path), params)

    return optax.chain(
        optax.adam(config.optimizer.learning_rate, eps=config.optimizer.eps),
        optax.masked(margin_softmax.project_to_unit_norm(axis=0), is_class_kernel))


def classification_loss(params, model, token_ids, labels, loss_config):
    """Mean margin-softmax loss and accuracy of one batch.

    Args:
      params: the SentenceClassifier parameters.
      model: the SentenceClassifier.
      token_ids: (B, T) int32.
      labels: (B,) int32 class ids.
      loss_config: kind, scale, margin, chunk_size.

    Returns:
      (loss, accuracy) scalars; accuracy is of the plain cosine argmax.
    """
    z = model.apply({"params": params}, token_ids, method=SentenceClassifier.encode)
    kernel = params["classifier"]["kernel"]                        # [H, C]
    kwargs = dict(kind=loss_config.kind, scale=loss_config.scale, margin=loss_config.margin)
    if loss_config.chunk_size:
        losses = margin_softmax.chunked_margin_softmax_loss(
            z, kernel, labels, chunk_size=loss_config.chunk_size, **kwargs)
        accuracy = jnp.nan  # the chunked path never forms the (B, C) cosines
    else:
        cos = z @ kernel                                           # [B, C]
        losses = margin_softmax.margin_softmax_loss(cos, labels, **kwargs)
        # "the target is the nearest centre", without an argmax (slow on XLA:CPU at 90k).
        target = jnp.take_along_axis(cos, labels[:, None], axis=-1)[:, 0]
        accuracy = jnp.mean(target >= jnp.max(cos, axis=-1))
    return jnp.mean(losses), accuracy


def make_train_step(model, optimizer, loss_config):
    """The pure `(state, batch, key) -> (state, metrics)` step the trainer jits."""
    def train_step(state, batch, key):
        del key  # the model has no dropout; kept for the trainer's uniform signature
        grad_fn = jax.value_and_grad(classification_loss, has_aux=True)
        (loss, accuracy), grads = grad_fn(state["params"], model, batch["token_ids"],
                                          batch["labels"], loss_config)
        params, opt_state, norms = trainer.apply_updates(
            state["params"], grads, state["opt_state"], optimizer)
        return ({"params": params, "opt_state": opt_state},
                {"loss": loss, "train_accuracy": accuracy, **norms})
    return train_step


def make_init_state(model, optimizer, maxlen: int):
    def init_state(key):
        params = model.init(key, jnp.zeros((1, maxlen), jnp.int32))["params"]
        return {"params": params, "opt_state": optimizer.init(params)}
    return init_state


def encode(model, params, token_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, T) ids → (n, H) unit sentence vectors, in batches (the last one padded)."""
    apply = _encode_fn(model)
    out = []
    for start in range(0, len(token_ids), batch_size):
        chunk = token_ids[start:start + batch_size]
        padded = np.zeros((batch_size, token_ids.shape[1]), np.int32)
        padded[:len(chunk)] = chunk
        out.append(np.asarray(apply(params, padded))[:len(chunk)])
    return np.concatenate(out)


@functools.cache
def _encode_fn(model):
    return jax.jit(lambda params, ids: model.apply(
        {"params": params}, ids, method=SentenceClassifier.encode))


def choose_threshold(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The cosine threshold for "answer or not" that maximises F1 on validation (SPEC §1.1).

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
    """Dispatches on `config.mode`: train (default), eval or search."""
    modes = {"train": run_training, "eval": run_evaluation, "search": run_search}
    if config.mode not in modes:
        from experiments.configs import ConfigError
        raise ConfigError(f"config.mode must be one of {sorted(modes)}, got {config.mode!r}")
    return modes[config.mode](config, workdir)


def run_training(config, workdir: pathlib.Path) -> dict[str, float]:
    """Trains on the open-set split, keeps the best top-1 weights, writes the threshold."""
    path = _data_path(config, workdir)
    groups = _read(path, config)
    vocab = input_pipeline.Vocabulary.build(groups.sentences, config.data.min_count)
    split = input_pipeline.split_by_group(groups, config.data.train_fraction)
    print(f"data: {path}: train {input_pipeline.group_size_report(split.train)}, "
          f"valid {input_pipeline.group_size_report(split.valid)}, vocabulary {vocab.size}",
          flush=True)
    vocab.save(workdir / "vocab.json")
    (workdir / "model.json").write_text(json.dumps(
        {"vocab_size": vocab.size, "num_classes": split.num_classes}) + "\n")

    model = build_model(config, vocab.size, split.num_classes)
    optimizer = make_optimizer(config)
    maxlen = config.data.maxlen
    train_ids = vocab.encode(split.train.sentences, maxlen)
    valid_ids = vocab.encode(split.valid.sentences, maxlen)
    from experiments import data
    batches = data.EpochBatches({"token_ids": train_ids, "labels": split.train_labels},
                                batch_size=config.batch_size, seed=config.trainer.seed)

    def evaluate(state):
        z = encode(model, state["params"], valid_ids, config.eval_batch_size)
        return retrieval.retrieval_metrics(z, split.valid.group_ids)

    trainer_config = _resolved_trainer_config(config, batches.batches_per_epoch)
    task = trainer.Task(init_state=make_init_state(model, optimizer, maxlen),
                        train_step=make_train_step(model, optimizer, config.loss),
                        batches=batches, evaluate=evaluate)
    result = trainer.train(task, trainer_config, workdir)
    template = jax.eval_shape(make_init_state(model, optimizer, maxlen), jax.random.PRNGKey(0))
    best = trainer.load_state(workdir, template, step="best")
    z = encode(model, best["params"], valid_ids, config.eval_batch_size)
    metrics = retrieval.retrieval_metrics(z, split.valid.group_ids)
    threshold = choose_threshold(z, split.valid.group_ids)
    (workdir / "threshold.json").write_text(json.dumps(threshold) + "\n")
    summary = {**metrics, "best_step": result.best_step, **{
        f"faq_{k}": v for k, v in threshold.items()}}
    print(json.dumps(summary), flush=True)
    return summary


def _resolved_trainer_config(config, batches_per_epoch: int):
    """Fills the per-epoch defaults (0 = once per epoch; num_steps 0 = epochs × epoch)."""
    resolved = config.trainer.copy_and_resolve_references()
    with resolved.unlocked():
        if not resolved.num_steps:
            resolved.num_steps = config.epochs * batches_per_epoch
        if not resolved.eval_every:
            resolved.eval_every = batches_per_epoch
        if not resolved.checkpoint_every:
            resolved.checkpoint_every = batches_per_epoch
    return resolved


def _load_trained(config, workdir: pathlib.Path):
    """The vocabulary, model and best parameters of a trained workdir."""
    for name in ("vocab.json", "model.json"):
        if not (workdir / name).exists():
            raise FileNotFoundError(f"{workdir / name} is missing: is {workdir} the workdir "
                                    "of a finished training run?")
    vocab = input_pipeline.Vocabulary.load(workdir / "vocab.json")
    sizes = json.loads((workdir / "model.json").read_text())
    model = build_model(config, sizes["vocab_size"], sizes["num_classes"])
    optimizer = make_optimizer(config)
    template = jax.eval_shape(make_init_state(model, optimizer, config.data.maxlen),
                              jax.random.PRNGKey(0))
    state = trainer.load_state(workdir, template, step="best")
    return vocab, model, state["params"]


def run_evaluation(config, workdir: pathlib.Path) -> dict[str, float]:
    """Scores a trained workdir on `config.data.eval_path`; the last line printed is JSON."""
    if not config.data.eval_path:
        from experiments.configs import ConfigError
        raise ConfigError("mode=eval needs --config.data.eval_path=GROUPS_FILE")
    vocab, model, params = _load_trained(config, workdir)
    groups = _read(config.data.eval_path, config)
    report = input_pipeline.group_size_report(groups)
    z = encode(model, params, vocab.encode(groups.sentences, config.data.maxlen),
               config.eval_batch_size)
    metrics = retrieval.retrieval_metrics(z, groups.group_ids)
    print(f"{config.data.eval_path}: {report}")
    print(json.dumps(metrics), flush=True)
    return metrics


def run_search(config, workdir: pathlib.Path, stdin=None, stdout=None) -> dict[str, float]:
    """FAQ search: stored questions encoded once, queries from stdin, nearest answers.

    Each query prints its `config.search.top` nearest stored questions with their cosines
    and "accept" or "reject" by the threshold chosen on validation (threshold.json).
    """
    from experiments import data
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if not config.search.questions:
        from experiments.configs import ConfigError
        raise ConfigError("mode=search needs --config.search.questions=FILE (one per line)")
    vocab, model, params = _load_trained(config, workdir)
    threshold = json.loads((workdir / "threshold.json").read_text())
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
