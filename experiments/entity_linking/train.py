"""Training, evaluation and linking for the joint NER + linking model (kexue.fm/archives/6919).

`run_training`: the KB and texts (`data.path`, else texts generated from `data.kb_path` or
the embedded KB), the post's dictionary pruning and candidate restriction from the training
texts, the character vocabulary and the frozen word vectors (a file, else trained with
gensim on the KB descriptions), then the shared trainer with EMA; each evaluation is the
post's end-to-end dev F1, whose best weights are kept. At the end the best weights are
scored once more: per-stage max-match figures, NER F1, linking accuracy, F1 with and
without the NIL option (its threshold chosen on dev) and the error analysis
(`errors.json`, `errors.md`), all also in summary.json's "results".

`run_link`: texts in, one JSON line of mentions per text out.
"""

import functools
import json
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import configs, data, evaluation, trainer
from experiments.entity_linking import (
    generate,
    input_pipeline,
    kb,
    max_match,
    scoring,
    word_vectors,
)
from experiments.errors import UserError
from models.entity_linking import FEATURES, EntityLinker, joint_loss

WORD_VECTORS_FILE = "word_vectors.txt"
LINKER_FILE = "linker.json"       # pruned words, restricted candidates, NIL threshold
VOCAB_FILE = "vocab.json"


def parse_features(text: str) -> tuple[str, ...]:
    """"span,char" → ("span", "char"), in `FEATURES` order; empty names ignored."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    return tuple(name for name in FEATURES if name in names)


def _features(config) -> tuple[str, ...]:
    return parse_features(config.model.features)


def build_model(config, vocab_size: int) -> EntityLinker:
    """The post's network with the config's sizes."""
    m = config.model
    return EntityLinker(vocab_size=vocab_size, embed_dim=m.embed_dim, hidden_dim=m.hidden_dim,
                        conv_dim=m.conv_dim, conv_width=m.conv_width, num_heads=m.num_heads,
                        head_dim=m.head_dim, link_hidden=m.link_hidden, dropout=m.dropout,
                        features=_features(config), use_word_vectors=m.word_vectors,
                        dtype=trainer.compute_dtype(config.trainer))


def make_optimizer(config) -> optax.GradientTransformation:
    return optax.adam(config.optimizer.learning_rate, eps=config.optimizer.eps)


def _vectors(model: EntityLinker, table, word_ids):
    return table[word_ids] if model.use_word_vectors else None


def model_inputs(model: EntityLinker, table, batch) -> tuple:
    """The positional inputs of `EntityLinker.__call__` from a batch and the word table."""
    return (batch["char_ids"], _vectors(model, table, batch["word_ids"]), batch["boundaries"],
            batch["link_features"], batch["description_ids"],
            _vectors(model, table, batch["description_word_ids"]))


def make_init_state(model: EntityLinker, optimizer, word_table: np.ndarray, maxlen: int,
                    description_maxlen: int):
    """key → {"params", "opt_state", "word_table"}: the table rides along, never trained."""
    def init_state(key):
        table = jnp.asarray(word_table)
        batch = {"char_ids": jnp.ones((1, maxlen), jnp.int32),
                 "word_ids": jnp.zeros((1, maxlen), jnp.int32),
                 "boundaries": jnp.zeros((1, maxlen, 2)),
                 "link_features": jnp.zeros((1, maxlen, 4)),
                 "description_ids": jnp.ones((1, description_maxlen), jnp.int32),
                 "description_word_ids": jnp.zeros((1, description_maxlen), jnp.int32)}
        params = model.init(key, *model_inputs(model, table, batch))["params"]
        return {"params": params, "opt_state": optimizer.init(params), "word_table": table}
    return init_state


def make_train_step(model: EntityLinker, optimizer):
    """The pure `(state, batch, key) -> (state, metrics)` step: the post's joint loss."""
    def loss_fn(params, table, batch, key):
        dtype = model.dtype or jnp.float32
        params = trainer.cast_to_compute(params, dtype)
        ner_logits, link_logit = model.apply(
            {"params": params}, *trainer.cast_to_compute(model_inputs(model, table, batch),
                                                         dtype),
            deterministic=False, rngs={"dropout": key})
        return joint_loss(ner_logits, link_logit, batch["boundaries"], batch["ner_targets"],
                          batch["char_ids"] > 0, batch["link_labels"])

    def train_step(state, batch, key):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["word_table"], batch, key)
        params, opt_state, norms = trainer.apply_updates(
            state["params"], grads, state["opt_state"], optimizer)
        return ({**state, "params": params, "opt_state": opt_state},
                {"loss": loss, **metrics, **norms})
    return train_step


@functools.cache
def _ner_fn(model: EntityLinker):
    """Jitted ((params, table), {char_ids, word_ids, boundaries}) → (B, T, 2) probabilities."""
    def ner(params_and_table, batch):
        params, table = params_and_table
        return model.apply({"params": params}, batch["char_ids"],
                           _vectors(model, table, batch["word_ids"]), batch["boundaries"],
                           method=EntityLinker.ner)
    return jax.jit(ner)


@functools.cache
def _link_fn(model: EntityLinker):
    """Jitted ((params, table), pair batch) → (B,) p_link."""
    def link(params_and_table, batch):
        params, table = params_and_table
        return model.apply({"params": params}, *model_inputs(model, table, batch),
                           method=EntityLinker.link)
    return jax.jit(link)


class Linker:
    """Runs the trained model over texts: NER, candidates, p_link of each candidate.

    Args:
      model: the EntityLinker.
      encoder: the input encoder (pruned index, vocabulary, word vectors).
      links: restricted candidate lists (`max_match.candidate_links`).
      inference: the config's `inference` fields (thresholds).
      batch_size: texts or pairs per jitted call.
    """

    def __init__(self, model, encoder: input_pipeline.Encoder, links, inference,
                 batch_size: int):
        self.model, self.encoder, self.links = model, encoder, links
        self.inference, self.batch_size = inference, batch_size

    def ner_inputs(self, texts) -> tuple[list, dict[str, np.ndarray]]:
        encoded = [self.encoder.text(text) for text in texts]
        return encoded, {"char_ids": np.stack([e.char_ids for e in encoded]),
                         "word_ids": np.stack([e.word_ids for e in encoded]),
                         "boundaries": np.stack([e.boundaries for e in encoded])}

    def decide(self, params_and_table, encoded, ner_probabilities
               ) -> list[list[scoring.SpanDecision]]:
        """Spans from the NER probabilities, then every candidate of every span scored."""
        spans = [scoring.decode_spans(p[:, 0], p[:, 1], e.length,
                                      self.inference.start_threshold,
                                      self.inference.end_threshold)
                 for e, p in zip(encoded, ner_probabilities)]
        candidates = [[max_match.candidates(e.text[s:t], self.encoder.index, self.links)
                       for s, t in text_spans] for e, text_spans in zip(encoded, spans)]
        pairs = [self.encoder.pair(e, span, kb_id)
                 for e, text_spans, text_candidates in zip(encoded, spans, candidates)
                 for span, ids in zip(text_spans, text_candidates) for kb_id in ids]
        scores = iter([])
        if pairs:
            scores = iter(evaluation.predict_in_batches(
                _link_fn(self.model), params_and_table, input_pipeline.stack(pairs),
                self.batch_size).tolist())
        return [[scoring.SpanDecision(span, tuple(ids), tuple(next(scores) for _ in ids))
                 for span, ids in zip(text_spans, text_candidates)]
                for text_spans, text_candidates in zip(spans, candidates)]

    def predict(self, params_and_table, texts) -> list[list[scoring.SpanDecision]]:
        encoded, inputs = self.ner_inputs(texts)
        probabilities = evaluation.predict_in_batches(_ner_fn(self.model), params_and_table,
                                                      inputs, self.batch_size)
        return self.decide(params_and_table, encoded, probabilities)


# ------------------------------------------------------------------------------------------
# Data.


def _read_examples(path, config, labelled=True):
    examples, skipped = kb.read_examples(path, labelled=labelled, skip_bad=config.data.skip_bad)
    if len(skipped):
        print(skipped.summary(), flush=True)
    return examples


def load_entities(config) -> tuple[list[kb.Entity], str]:
    """The KB of the config and a line saying which it is."""
    if config.data.path:
        path = pathlib.Path(config.data.path) / "kb_data"
    elif config.data.kb_path:
        path = pathlib.Path(config.data.kb_path)
    else:
        return list(generate.EMBEDDED_KB), "the embedded KB"
    entities, skipped = kb.read_kb(path, skip_bad=config.data.skip_bad)
    if len(skipped):
        print(skipped.summary(), flush=True)
    return entities, str(path)


def load_texts(config, entities) -> tuple[list, list, list, str]:
    """(train, dev, unlabelled develop texts, a line saying where they came from)."""
    if config.data.path:
        directory = pathlib.Path(config.data.path)
        examples = _read_examples(directory / "train.json", config)
        train, dev = max_match.split_train_dev(examples, seed=config.data.split_seed,
                                               folds=config.data.dev_folds)
        develop = []
        if (directory / "develop.json").exists():
            develop = _read_examples(directory / "develop.json", config, labelled=False)
        return train, dev, develop, (f"texts: {directory / 'train.json'}, every "
                                     f"{config.data.dev_folds}th of a fixed order as dev")
    with tempfile.TemporaryDirectory() as directory:
        paths = generate.write_corpus(directory, entities,
                                      num_train=config.data.generated_train,
                                      num_dev=config.data.generated_dev,
                                      seed=config.data.generated_seed, write_kb=False)
        # Read back through the loaders, as a user's files would be.
        train, dev = (_read_examples(paths[name], config) for name in ("train", "dev"))
    return train, dev, [], f"texts: generated (seed {config.data.generated_seed})"


def word_vectors_for(config, entities, workdir: pathlib.Path, *, training: bool
                     ) -> tuple[word_vectors.WordVectors, str]:
    """The frozen word vectors of the run and a line saying where they came from."""
    if not config.model.word_vectors:
        return word_vectors.WordVectors((), np.zeros((1, 1), np.float32)), "word vectors: off"
    if config.data.word_vectors:
        vectors = word_vectors.read_word2vec(config.data.word_vectors)
        return vectors, (f"word vectors: {config.data.word_vectors} ({len(vectors.words)} "
                         f"words × {vectors.dim})")
    path = workdir / WORD_VECTORS_FILE
    if not training or path.exists():
        if not path.exists():
            raise configs.NotATrainedRun(f"{path} is missing: is {workdir} the workdir of a "
                                         "finished training run?")
        vectors = word_vectors.read_word2vec(path)
        return vectors, f"word vectors: {path} (trained on the KB descriptions)"
    vectors = word_vectors.train_word2vec(
        word_vectors.kb_sentences(entities), dim=config.data.word_vector_dim,
        epochs=config.data.word_vector_epochs, seed=config.trainer.seed)
    word_vectors.write_word2vec(vectors, path)
    # Read back so that training and link mode use the same (rounded) numbers.
    vectors = word_vectors.read_word2vec(path)
    return vectors, (f"word vectors: none given (--config.data.word_vectors=FILE); trained "
                     f"on the fly with gensim on the KB descriptions: {len(vectors.words)} "
                     f"words × {vectors.dim}, written to {path}")


def _print(*lines: str) -> None:
    print("\n".join(lines), flush=True)


# ------------------------------------------------------------------------------------------
# Training.


def run(config, workdir: pathlib.Path) -> dict:
    """Dispatches on `config.mode`: train (default) or link (`MODES`)."""
    configs.require_choice(config, "mode", MODES)
    return MODES[config.mode](config, workdir)


def end_to_end_figures(examples, decisions, inference, nil_threshold=None) -> dict:
    """The seed's F1 (gold without NIL, low scores dropped) of the decisions on `examples`."""
    gold = [scoring.gold_triples(e, with_nil=False) for e in examples]
    predicted = [scoring.link(e.text, ds, link_threshold=inference.link_threshold)
                 for e, ds in zip(examples, decisions)]
    return scoring.micro_f1(gold, predicted)


def ner_and_linking_figures(examples, decisions) -> dict:
    """NER P/R/F1 over (mention, offset) against the linked gold mentions, and the linking
    accuracy: the share of correctly found gold mentions whose best candidate is right."""
    gold = [{(m.mention, m.offset) for m in e.linked} for e in examples]
    found = [{(e.text[s:t], s) for (s, t) in (d.span for d in ds)}
             for e, ds in zip(examples, decisions)]
    ner = scoring.micro_f1(gold, found)
    right = total = 0
    for example, text_decisions in zip(examples, decisions):
        truth = {(m.offset, m.offset + len(m.mention)): m.kb_id for m in example.linked}
        for decision in text_decisions:
            if decision.span in truth:
                total += 1
                right += decision.best[0] == truth[decision.span]
    return {"ner_precision": ner["precision"], "ner_recall": ner["recall"],
            "ner_f1": ner["f1"], "linking_accuracy": right / total if total else 0.0}


def run_training(config, workdir: pathlib.Path) -> dict:
    """Trains, keeps the best dev F1 weights, and writes the figures and error analysis."""
    workdir = pathlib.Path(workdir)
    entities, kb_source = load_entities(config)
    train_examples, dev_examples, develop, text_source = load_texts(config, entities)
    full_index = kb.build_index(entities)
    index, removed = max_match.prune_index(full_index, train_examples,
                                           threshold=config.data.prune_threshold)
    links = max_match.candidate_links(train_examples, index,
                                      min_count=config.data.candidate_min_count)
    vocab = input_pipeline.Vocabulary.build(
        [*index.descriptions.values(), *(e.text for e in train_examples)], config.data.min_count)
    vectors, vectors_source = word_vectors_for(config, entities, workdir, training=True)
    stages = max_match.pipeline_figures(train_examples, dev_examples, full_index,
                                        threshold=config.data.prune_threshold,
                                        min_count=config.data.candidate_min_count)
    _print(f"KB: {kb_source}, {len(entities)} entities; {text_source}: "
           f"{len(train_examples)} train / {len(dev_examples)} dev texts",
           f"dictionary: {len(full_index.kb2id)} aliases, {len(removed)} pruned, "
           f"{len(links)} restricted candidate lists; vocabulary {vocab.size} characters",
           vectors_source,
           "max-match on dev: " + "; ".join(
               f"{stage} recall {row['recall']:.3f} precision {row['precision']:.3f}"
               for stage, row in stages.items()))
    trainer.write_run_file(workdir, VOCAB_FILE, vocab.to_json())
    linker_record = {"removed": sorted(removed),
                     "links": {key: list(ids) for key, ids in sorted(links.items())}}
    trainer.write_run_file(workdir, LINKER_FILE, json.dumps(linker_record, ensure_ascii=False))

    encoder = input_pipeline.Encoder(index, vocab, vectors, config.data.maxlen,
                                     config.data.description_maxlen)
    texts = input_pipeline.training_texts(train_examples, encoder)
    batches = input_pipeline.TrainingBatches(texts, encoder, config.batch_size,
                                             config.trainer.seed)
    model = build_model(config, vocab.size)
    optimizer = make_optimizer(config)
    init_state = make_init_state(model, optimizer, vectors.table, config.data.maxlen,
                                 config.data.description_maxlen)
    linker = Linker(model, encoder, links, config.inference, config.eval_batch_size)
    encoded_dev, dev_inputs = linker.ner_inputs([e.text for e in dev_examples])

    def score(ner_probabilities, state):
        decisions = linker.decide((state["params"], state["word_table"]), encoded_dev,
                                  ner_probabilities)
        return end_to_end_figures(dev_examples, decisions, config.inference)

    evaluator = evaluation.Evaluator(
        predict_fn=_ner_fn(model), inputs=dev_inputs, score_fn=score,
        batch_size=config.eval_batch_size,
        params_of=lambda state: (state["params"], state["word_table"]))
    fingerprint = {
        "config": trainer.config_fingerprint(config, ignore=(
            "mode", "link", "inference", "eval_batch_size", "data.skip_bad")),
        "vocabulary": vocab.digest(), "word_vectors": vectors.digest(),
        "train_data": trainer.array_digest(
            np.stack([t.inputs.char_ids for t in texts]),
            np.stack([t.ner_targets for t in texts])),
        "pruned": trainer.array_digest(np.asarray(sorted(removed), dtype=str))}
    task = trainer.Task(init_state=init_state, train_step=make_train_step(model, optimizer),
                        batches=batches, evaluate=evaluator, fingerprint=fingerprint)
    trainer_config = trainer.with_epoch_defaults(config.trainer, config.epochs,
                                                 batches.batches_per_epoch)
    result = trainer.train(task, trainer_config, workdir)

    template = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    best = trainer.load_state(workdir, template, step="best")
    params_and_table = (best["params"], best["word_table"])
    decisions = linker.predict(params_and_table, [e.text for e in dev_examples])
    seed_figures = end_to_end_figures(dev_examples, decisions, config.inference)
    nil_threshold, nil_figures = scoring.choose_nil_threshold(dev_examples, decisions)
    linker_record["nil_threshold"] = nil_threshold
    (workdir / LINKER_FILE).write_text(json.dumps(linker_record, ensure_ascii=False))
    predicted = [scoring.link(e.text, ds, link_threshold=config.inference.link_threshold)
                 for e, ds in zip(dev_examples, decisions)]
    predicted_nil = [scoring.link(e.text, ds, nil_threshold=nil_threshold)
                     for e, ds in zip(dev_examples, decisions)]
    analyses = {
        "without NIL (the post)": scoring.error_analysis(dev_examples, decisions, predicted,
                                                         with_nil=False),
        f"with NIL (τ = {nil_threshold:.3f})": scoring.error_analysis(
            dev_examples, decisions, predicted_nil, with_nil=True)}
    (workdir / "errors.json").write_text(json.dumps(analyses, indent=2, ensure_ascii=False)
                                         + "\n")
    (workdir / "errors.md").write_text(scoring.error_markdown(analyses) + "\n")
    without, with_nil = analyses.values()
    results = {
        "f1": seed_figures["f1"], "precision": seed_figures["precision"],
        "recall": seed_figures["recall"],
        **ner_and_linking_figures(dev_examples, decisions),
        "nil_f1": nil_figures["f1"], "nil_precision": nil_figures["precision"],
        "nil_recall": nil_figures["recall"], "nil_threshold": nil_threshold,
        **{f"stage_{stage}_{key}": row[key] for stage, row in stages.items()
           for key in ("recall", "precision", "link_recall")},
        **{f"miss_{kind}": n for kind, n in without["misses"].items()},
        **{f"false_positive_{kind}": n for kind, n in without["false_positives"].items()},
        **{f"nil_miss_{kind}": n for kind, n in with_nil["misses"].items()},
        **{f"nil_false_positive_{kind}": n
           for kind, n in with_nil["false_positives"].items()},
        "best_step": result.best_step, "word_vectors": vectors_source,
    }
    if develop:
        path = workdir / "develop_predictions.json"
        develop_decisions = linker.predict(params_and_table, [e.text for e in develop])
        kb.write_jsonl((_output_record(e.text, ds, config.inference, None, e.text_id)
                        for e, ds in zip(develop, develop_decisions)), path)
        _print(f"{len(develop)} develop.json predictions written to {path}")
    trainer.update_summary(workdir, results=results)
    _print("errors (dev):", scoring.error_markdown(analyses),
           json.dumps(results, allow_nan=False, ensure_ascii=False))
    return results


# ------------------------------------------------------------------------------------------
# Link mode.


def _output_record(text: str, decisions, inference, nil_threshold, text_id=None) -> dict:
    triples = scoring.link(text, decisions, link_threshold=inference.link_threshold,
                           nil_threshold=nil_threshold)
    record = {"text_id": text_id} if text_id is not None else {}
    return {**record, "text": text, "mention_data": [
        {"kb_id": kb_id, "mention": mention, "offset": str(offset)}
        for mention, offset, kb_id in triples]}


def load_trained(config, workdir: pathlib.Path):
    """(Linker, (params, table), NIL threshold) of a trained workdir; reads, never writes."""
    workdir = pathlib.Path(workdir)
    for name in (VOCAB_FILE, LINKER_FILE):
        if not (workdir / name).is_file():
            raise configs.NotATrainedRun(f"{workdir / name} is missing: is {workdir} the "
                                         "workdir of a finished training run?")
    vocab = input_pipeline.Vocabulary.from_json((workdir / VOCAB_FILE).read_text("utf-8"))
    record = json.loads((workdir / LINKER_FILE).read_text("utf-8"))
    entities, _ = load_entities(config)
    index = kb.build_index(entities).without(record["removed"])
    links = {key: tuple(ids) for key, ids in record["links"].items()}
    vectors, _ = word_vectors_for(config, entities, workdir, training=False)
    encoder = input_pipeline.Encoder(index, vocab, vectors, config.data.maxlen,
                                     config.data.description_maxlen)
    model = build_model(config, vocab.size)
    init_state = make_init_state(model, make_optimizer(config), vectors.table,
                                 config.data.maxlen, config.data.description_maxlen)
    state = trainer.load_state(workdir, jax.eval_shape(init_state, jax.random.PRNGKey(0)),
                               step="best")
    linker = Linker(model, encoder, links, config.inference, config.eval_batch_size)
    return linker, (state["params"], state["word_table"]), record.get("nil_threshold")


def run_link(config, workdir: pathlib.Path, stdin=None, stdout=None) -> dict:
    """Links every text of `link.input` (one per line; "-" reads stdin), writing
    {"text", "mention_data": [{"kb_id", "mention", "offset"}]} JSON lines to `link.output`
    or stdout. With `inference.nil` a low-scoring mention comes out as NIL."""
    if config.link.input == "-":
        texts = [line.rstrip("\n") for line in (stdin or sys.stdin)]
    else:
        texts = data.read_lines(config.link.input)
    texts = [text for text in texts if text.strip()]
    linker, params_and_table, nil_threshold = load_trained(config, workdir)
    if config.inference.nil and nil_threshold is None:
        raise UserError(f"{workdir / LINKER_FILE} has no NIL threshold: the run did not finish")
    decisions = linker.predict(params_and_table, texts) if texts else []
    records = [_output_record(text, ds, config.inference,
                              nil_threshold if config.inference.nil else None)
               for text, ds in zip(texts, decisions)]
    if config.link.output:
        kb.write_jsonl(records, config.link.output)
    else:
        out = stdout or sys.stdout
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    return {"texts": float(len(texts)),
            "mentions": float(sum(len(r["mention_data"]) for r in records))}


# config.mode → what runs; `config.validate` checks the mode against this table.
MODES = {"train": run_training, "link": run_link}
