"""Training and evaluation of the BERT NL2SQL model (docs/nl2sql.md).

Data: TableQA-format questions with their tables (and sqlite database, built in the workdir
from the tables when none sits beside the questions), or the embedded generator's. The model
(`models.nl2sql.NL2SQL`) is fine-tuned with the summed cross-entropies; each evaluation
decodes every question and reports logic-form, execution and per-component accuracies.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import configs, data, evaluation, schedules, trainer
from experiments.nl2sql import decode, generate, labels, scoring, tables
from experiments.nl2sql.tokenization import SPECIAL_TOKENS, CharTokenizer, read_vocab
from models import bert
from models.nl2sql import NL2SQL, nl2sql_loss


def _read_split(path, config, what: str):
    tables_path, _ = tables.companion_paths(path)
    table_map, skipped_tables = tables.read_tables(tables_path, skip_bad=config.data.skip_bad)
    examples, skipped = tables.read_questions(path, table_map, skip_bad=config.data.skip_bad)
    for report in (skipped_tables, skipped):
        if len(report):
            print(report.summary(), flush=True)
    if not examples:
        raise data.RecordError(path, None, None, f"no {what} questions")
    return examples, table_map


def load_data(config, workdir: pathlib.Path):
    """(train examples, eval examples, tables by id, path of the eval database)."""
    if not config.data.path:
        folder = workdir / "generated"
        train_path = generate.write_split(folder, "train", config.data.generated_tables,
                                          config.data.generated_questions, seed=1)
        eval_path = generate.write_split(folder, "eval", config.data.generated_eval_tables,
                                         config.data.generated_questions, seed=2)
        print(f"data: generated TableQA-format data in {folder}", flush=True)
    else:
        train_path = pathlib.Path(config.data.path)
        eval_path = pathlib.Path(config.data.eval_path) if config.data.eval_path else None
    train, table_map = _read_split(train_path, config, "training")
    if eval_path is None:
        order = np.random.default_rng(config.trainer.seed).permutation(len(train))
        cut = max(1, int(round(len(train) * config.data.valid_fraction)))
        evaluation_set = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])] or evaluation_set
        db_source = train_path
    else:
        evaluation_set, eval_tables = _read_split(eval_path, config, "evaluation")
        table_map = {**table_map, **eval_tables}
        db_source = eval_path
    _, db_path = tables.companion_paths(db_source)
    if not db_path.is_file():
        db_path = tables.write_database(table_map, workdir / "tables.db")
    return train, evaluation_set, table_map, db_path


def build_tokenizer(config, examples, table_map, workdir) -> CharTokenizer:
    """The checkpoint's vocabulary, or one built from the data's characters (written to
    WORKDIR/vocab.txt either way)."""
    if config.bert.checkpoint:
        tokens = read_vocab(pathlib.Path(config.bert.checkpoint) / "vocab.txt")
    else:
        chars = set()
        for example in examples:
            chars.update(example.question)
        for table in table_map.values():
            for name in table.header:
                chars.update(name)
        tokens = list(SPECIAL_TOKENS) + ["[unused1]"] + sorted(
            c for c in chars if not c.isspace() and c not in SPECIAL_TOKENS)
    trainer.write_run_file(workdir, "vocab.txt", "".join(t + "\n" for t in tokens))
    return CharTokenizer(tokens)


def bert_config(config, vocab_size: int) -> bert.BertConfig:
    """The encoder's sizes: the checkpoint's config.json, or the config's fields."""
    if config.bert.checkpoint:
        return bert.read_config(pathlib.Path(config.bert.checkpoint))
    return bert.BertConfig(vocab_size=vocab_size, hidden_size=config.bert.hidden_size,
                           num_hidden_layers=config.bert.num_layers,
                           num_attention_heads=config.bert.num_heads,
                           intermediate_size=config.bert.intermediate_size,
                           hidden_act=config.bert.hidden_act,
                           max_position_embeddings=max(512, config.data.maxlen),
                           hidden_dropout_prob=config.bert.dropout)


def make_init_state(model, optimizer, maxlen: int, max_headers: int, pretrained=None):
    def init_state(key):
        ids = jnp.zeros((1, maxlen), jnp.int32)
        heads = jnp.zeros((1, max_headers), jnp.int32)
        params = model.init(key, ids, ids, heads, heads)["params"]
        if pretrained is not None:
            params = {**params, "bert": pretrained}
        return {"params": params, "opt_state": optimizer.init(params)}
    return init_state


def make_train_step(model, optimizer):
    """The pure `(state, batch, key) -> (state, metrics)` step."""
    def loss_fn(params, batch, key):
        logits = model.apply({"params": params}, batch["token_ids"], batch["token_mask"],
                             batch["header_positions"], batch["header_mask"],
                             deterministic=False, rngs={"dropout": key})
        return nl2sql_loss(logits, batch)

    def train_step(state, batch, key):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], batch, key)
        params, opt_state, norms = trainer.apply_updates(state["params"], grads,
                                                         state["opt_state"], optimizer)
        return {"params": params, "opt_state": opt_state}, {"loss": loss, **parts, **norms}
    return train_step


def make_predict_fn(model):
    """Jitted (params, batch) -> softmax probabilities of the four heads."""
    def predict(params, batch):
        logits = model.apply({"params": params}, batch["token_ids"], batch["token_mask"],
                             batch["header_positions"], batch["header_mask"])
        return jax.tree.map(lambda x: jax.nn.softmax(x, axis=-1), logits)
    return jax.jit(predict)


def decode_all(probabilities, examples, kept, table_map) -> list:
    """One query per example (None for the examples left out as too long)."""
    predictions = [None] * len(examples)
    for row, index in enumerate(kept):
        example = examples[index]
        predictions[index] = decode.decode(
            {name: value[row] for name, value in probabilities.items()}, example.question,
            table_map[example.table_id])
    return predictions


def run(config, workdir: pathlib.Path) -> dict[str, float]:
    """Trains, keeps the best logic-form weights, writes predictions and summary."""
    workdir = pathlib.Path(workdir)
    train, evaluation_set, table_map, db_path = load_data(config, workdir)
    tokenizer = build_tokenizer(config, train + evaluation_set, table_map, workdir)
    max_headers = max(len(t.header) for t in table_map.values())
    maxlen = config.data.maxlen
    train_arrays = labels.build_arrays(tokenizer, train, table_map, maxlen, max_headers)
    eval_arrays = labels.build_arrays(tokenizer, evaluation_set, table_map, maxlen,
                                      max_headers, with_labels=False)
    print(f"data: {len(train)} training questions ({len(train_arrays.too_long)} longer than "
          f"{maxlen} tokens, left out), {len(evaluation_set)} evaluation questions "
          f"({len(eval_arrays.too_long)} too long, scored as wrong); {len(table_map)} tables;"
          f" database {db_path}", flush=True)
    if not train_arrays.kept:
        raise data.RecordError(config.data.path or "generated", None, None,
                               f"no training question fits data.maxlen={maxlen}")
    encoder_config = bert_config(config, tokenizer.vocab_size)
    if maxlen > encoder_config.max_position_embeddings:
        raise configs.ConfigError(
            f"--config.data.maxlen={maxlen}: the checkpoint's encoder has only "
            f"{encoder_config.max_position_embeddings} positions")
    pretrained = None
    if config.bert.checkpoint:
        _, variables = bert.from_pretrained(config.bert.checkpoint)
        pretrained = variables["params"]
    model = NL2SQL(encoder_config, column_hidden=config.model.column_hidden,
                   dtype=trainer.compute_dtype(config.trainer))
    batch_size = min(config.batch_size, len(train_arrays.kept))
    batches = data.EpochBatches(train_arrays.arrays, batch_size=batch_size,
                                seed=config.trainer.seed)
    per_epoch = batches.batches_per_epoch
    schedule = schedules.warmup_decay_constant(
        config.optimizer.peak_lr, int(config.optimizer.warmup_epochs * per_epoch),
        int(config.optimizer.decay_epochs * per_epoch), config.optimizer.final_lr)
    optimizer = optax.adam(schedule, eps=config.optimizer.eps)
    connection = tables.connect_read_only(db_path)
    predict_fn = make_predict_fn(model)

    def score_fn(probabilities, state):
        del state
        predictions = decode_all(probabilities, evaluation_set, eval_arrays.kept, table_map)
        return scoring.score(predictions, evaluation_set, table_map, connection)

    eval_inputs = {k: eval_arrays.arrays[k] for k in
                   ("token_ids", "token_mask", "header_positions", "header_mask")}
    evaluator = evaluation.Evaluator(predict_fn=predict_fn, inputs=eval_inputs,
                                     batch_size=config.eval_batch_size, score_fn=score_fn)
    resolved = config.trainer.copy_and_resolve_references()
    with resolved.unlocked():
        resolved.num_steps = resolved.num_steps or config.epochs * per_epoch
        resolved.eval_every = resolved.eval_every or per_epoch
        resolved.checkpoint_every = resolved.checkpoint_every or per_epoch
    init_state = make_init_state(model, optimizer, maxlen, max_headers, pretrained)
    task = trainer.Task(
        init_state=init_state, train_step=make_train_step(model, optimizer),
        batches=batches, evaluate=evaluator,
        fingerprint={"config": trainer.config_fingerprint(config, ignore=(
                         "mode", "data.skip_bad", "eval_batch_size")),
                     "vocabulary": trainer.array_digest(np.frombuffer(
                         "\n".join(tokenizer.tokens).encode(), np.uint8)),
                     "train_data": trainer.array_digest(*train_arrays.arrays.values())})
    result = trainer.train(task, resolved, workdir)
    best = trainer.load_state(workdir, jax.eval_shape(init_state, jax.random.PRNGKey(0)),
                              step="best")
    probabilities = evaluator.predict(best)
    predictions = decode_all(probabilities, evaluation_set, eval_arrays.kept, table_map)
    metrics = scoring.score(predictions, evaluation_set, table_map, connection)
    connection.close()
    trainer.write_run_file(workdir, "predictions.jsonl", "".join(
        json.dumps({"question": e.question, "table_id": e.table_id,
                    "sql": None if p is None else p.to_json()}, ensure_ascii=False) + "\n"
        for e, p in zip(evaluation_set, predictions)))
    summary = {**metrics, "too_long_train": len(train_arrays.too_long),
               "too_long_eval": len(eval_arrays.too_long), "best_step": result.best_step}
    trainer.update_summary(workdir, results=summary)
    print(json.dumps(summary, allow_nan=False), flush=True)
    return summary
