"""Masked-LM pre-training of a small BERT (docs/nl2sql.md §5).

Text (files, or the NL2SQL generator's questions and table cells) becomes one stream of
characters, a [SEP] after each sentence, cut into windows `[CLS] c_1 … c_{T-1}`; one token per
character, as the NL2SQL tokeniser reads questions. Each step masks 15% of the real tokens of
its batch (80% [MASK], 10% a random token, 10% kept; at most `mlm.max_predictions` a window)
from the step's key; validation uses one fixed masking. The weights with the lowest
validation loss are written to WORKDIR/bert in the Hugging Face layout.
"""

import collections
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import data, evaluation, schedules, trainer
from experiments.nl2sql import generate
from experiments.nl2sql.tokenization import SPECIAL_TOKENS, CharTokenizer, read_vocab
from models import bert

SPACE_TOKEN = "[unused1]"


def generated_sentences(num_tables: int, questions_per_table: int, seed: int = 3
                        ) -> list[str]:
    """TableQA-style text from `experiments.nl2sql.generate`: per table its title, headers
    and cells (a row a sentence) and its questions. Seed 3: NL2SQL's generated training and
    evaluation splits use seeds 1 and 2."""
    rng = np.random.default_rng(seed)
    sentences = []
    for index in range(num_tables):
        table = generate.make_table(rng, index + 100_000 * seed)
        sentences.append(table.title + "：" + "，".join(table.header))
        sentences += ["，".join(
            generate.spoken_value(str(cell) if kind == "text" else generate.real_text(cell),
                                  kind, name, rng)
            for cell, kind, name in zip(row, table.types, table.header)) for row in table.rows]
        sentences += [generate.make_question(rng, table)[0]
                      for _ in range(questions_per_table)]
    return sentences


def read_sentences(paths: list[str], max_chars: int) -> list[str]:
    """The sentences of text files: a line is a document, a tab separates sentences; at most
    `max_chars` characters in file order."""
    sentences, total = [], 0
    for path in paths:
        for line in data.read_lines(path):
            for sentence in line.split("\t"):
                sentence = sentence.strip()
                if not sentence:
                    continue
                sentences.append(sentence[:max_chars - total])
                total += len(sentences[-1])
                if total >= max_chars:
                    return sentences
    return sentences


def build_vocabulary(sentences: list[str], max_vocab: int) -> list[str]:
    """Special tokens, [unused1] (whitespace), then the most frequent characters (ties in
    character order) up to `max_vocab` tokens in all."""
    counts = collections.Counter(c for s in sentences for c in s if not c.isspace())
    for token in SPECIAL_TOKENS:
        counts.pop(token, None)
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    head = list(SPECIAL_TOKENS) + [SPACE_TOKEN]
    return head + ranked[:max(max_vocab - len(head), 0)]


def make_windows(tokenizer: CharTokenizer, sentences: list[str], maxlen: int
                 ) -> dict[str, np.ndarray]:
    """The stream `s_1 [SEP] s_2 [SEP] …` cut into windows `[CLS] + maxlen − 1 tokens`.

    Returns:
      token_ids, token_mask: int32 [N, maxlen] (the last window padded).
    """
    stream = []
    for sentence in sentences:
        stream += tokenizer.encode(sentence) + [tokenizer.sep]
    body = maxlen - 1
    count = max(1, math.ceil(len(stream) / body))
    ids = np.full((count, maxlen), tokenizer.pad, np.int32)
    mask = np.zeros((count, maxlen), np.int32)
    for row in range(count):
        chunk = stream[row * body:(row + 1) * body]
        ids[row, 0] = tokenizer.cls
        ids[row, 1:1 + len(chunk)] = chunk
        mask[row, :1 + len(chunk)] = 1
    return {"token_ids": ids, "token_mask": mask}


def mask_tokens(key, token_ids, candidates, *, mask_prob: float, max_predictions: int,
                mask_id: int, first_random_id: int, vocab_size: int):
    """BERT's masking: each candidate is picked with `mask_prob` (at most `max_predictions`
    a row, a random subset when more); a pick becomes [MASK] (80%), a random token (10%) or
    stays (10%).

    Args:
      key: PRNG key.
      token_ids: int [B, T].
      candidates: bool [B, T], the positions that may be picked (real, not [CLS]/[SEP]).

    Returns:
      (masked ids [B, T], positions [B, K], labels [B, K] (the original ids),
      weights float32 [B, K]: 1 for a real pick, 0 for a filler position).
    """
    pick_key, order_key, kind_key, random_key = jax.random.split(key, 4)
    picked = candidates & (jax.random.uniform(pick_key, token_ids.shape) < mask_prob)
    score = jnp.where(picked, jax.random.uniform(order_key, token_ids.shape), -1.0)
    _, positions = jax.lax.top_k(score, max_predictions)                      # [B, K]
    weights = jnp.take_along_axis(picked, positions, axis=1).astype(jnp.float32)
    labels = jnp.take_along_axis(token_ids, positions, axis=1)
    kind = jax.random.uniform(kind_key, positions.shape)
    random_ids = jax.random.randint(random_key, positions.shape, first_random_id, vocab_size)
    replaced = jnp.where(kind < 0.8, mask_id, jnp.where(kind < 0.9, random_ids, labels))
    replaced = jnp.where(weights > 0, replaced, labels)
    rows = jnp.arange(token_ids.shape[0])[:, None]
    return token_ids.at[rows, positions].set(replaced), positions, labels, weights


def _candidates(tokenizer: CharTokenizer, token_ids, token_mask):
    return ((token_mask > 0) & (token_ids != tokenizer.cls) & (token_ids != tokenizer.sep)
            & (token_ids != tokenizer.pad))


def mlm_loss(logits, labels, weights):
    """Mean cross-entropy over the real picks; logits [B, K, V], labels/weights [B, K]."""
    nats = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(nats * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_train_step(model, optimizer, tokenizer: CharTokenizer, config):
    """The pure `(state, batch, key) -> (state, metrics)` step; masking from `key`."""
    masking = dict(mask_prob=config.mlm.mask_prob, max_predictions=config.mlm.max_predictions,
                   mask_id=tokenizer.mask, first_random_id=len(SPECIAL_TOKENS),
                   vocab_size=tokenizer.vocab_size)

    def train_step(state, batch, key):
        mask_key, dropout_key = jax.random.split(key)
        ids, mask = batch["token_ids"], batch["token_mask"]
        masked, positions, labels, weights = mask_tokens(
            mask_key, ids, _candidates(tokenizer, ids, mask), **masking)

        def loss_fn(params):
            logits = model.apply({"params": params}, masked, mask, positions,
                                 deterministic=False, rngs={"dropout": dropout_key})
            return mlm_loss(logits, labels, weights)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        params, opt_state, norms = trainer.apply_updates(state["params"], grads,
                                                         state["opt_state"], optimizer)
        return {"params": params, "opt_state": opt_state}, {"loss": loss, **norms}
    return train_step


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW (decay on matrices only) with warm-up and cosine decay, clipped."""
    opt = config.optimizer
    schedule = schedules.warmup_cosine(opt.learning_rate, config.trainer.num_steps,
                                       opt.warmup_steps, opt.end_fraction)
    return optax.chain(
        optax.clip_by_global_norm(opt.clip_norm),
        optax.adamw(schedule, eps=1e-6, weight_decay=opt.weight_decay,
                    mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)))


def load_text(config, workdir: pathlib.Path) -> list[str]:
    """The sentences of `data.path` (comma-separated files) or the generated text."""
    if config.data.path:
        paths = [p.strip() for p in config.data.path.split(",") if p.strip()]
        sentences = read_sentences(paths, config.data.max_chars)
        source = ", ".join(paths)
    else:
        sentences = generated_sentences(config.data.generated_tables,
                                        config.data.generated_questions)
        source = "generated TableQA-style questions and table cells"
    if not sentences:
        raise data.RecordError(config.data.path or "generated", None, None, "no text")
    print(f"data: {len(sentences)} sentences, {sum(map(len, sentences))} characters from "
          f"{source}", flush=True)
    return sentences


def encoder_config(config, vocab_size: int) -> bert.BertConfig:
    """The encoder's sizes from `config.bert`."""
    return bert.BertConfig(vocab_size=vocab_size, hidden_size=config.bert.hidden_size,
                           num_hidden_layers=config.bert.num_layers,
                           num_attention_heads=config.bert.num_heads,
                           intermediate_size=config.bert.intermediate_size,
                           hidden_act=config.bert.hidden_act,
                           max_position_embeddings=max(512, config.data.maxlen),
                           hidden_dropout_prob=config.bert.dropout)


def run(config, workdir: pathlib.Path) -> dict[str, float]:
    """Pre-trains, writes WORKDIR/bert from the best weights, returns the figures."""
    workdir = pathlib.Path(workdir)
    sentences = load_text(config, workdir)
    tokens = (read_vocab(config.data.vocab_path) if config.data.vocab_path
              else build_vocabulary(sentences, config.data.max_vocab))
    trainer.write_run_file(workdir, "vocab.txt", "".join(t + "\n" for t in tokens))
    tokenizer = CharTokenizer(tokens)
    windows = make_windows(tokenizer, sentences, config.data.maxlen)
    count = len(windows["token_ids"])
    valid_count = max(1, int(round(count * config.data.valid_fraction)))
    if count - valid_count < 1:
        raise data.RecordError(config.data.path or "generated", None, None,
                               f"{count} window(s) of {config.data.maxlen} tokens: too little "
                               "text to hold out validation windows")
    train_arrays = {k: v[:count - valid_count] for k, v in windows.items()}
    valid_arrays = {k: v[count - valid_count:] for k, v in windows.items()}
    unknown = float(np.mean(windows["token_ids"][windows["token_mask"] > 0] == tokenizer.unk))
    print(f"data: {count - valid_count} training and {valid_count} validation windows of "
          f"{config.data.maxlen} tokens; vocabulary {tokenizer.vocab_size}; "
          f"[UNK] {unknown:.2%} of tokens", flush=True)

    masking = dict(mask_prob=config.mlm.mask_prob, max_predictions=config.mlm.max_predictions,
                   mask_id=tokenizer.mask, first_random_id=len(SPECIAL_TOKENS),
                   vocab_size=tokenizer.vocab_size)
    ids, mask = jnp.asarray(valid_arrays["token_ids"]), jnp.asarray(valid_arrays["token_mask"])
    masked, positions, labels, weights = jax.device_get(mask_tokens(
        jax.random.PRNGKey(config.trainer.seed + 1), ids,
        _candidates(tokenizer, ids, mask), **masking))
    eval_inputs = {"token_ids": masked, "token_mask": valid_arrays["token_mask"],
                   "positions": positions, "labels": labels, "weights": weights}

    sizes = encoder_config(config, tokenizer.vocab_size)
    model = bert.BertForMaskedLM(sizes, dtype=trainer.compute_dtype(config.trainer))
    optimizer = make_optimizer(config)

    def predict(params, batch):
        logits = model.apply({"params": params}, batch["token_ids"], batch["token_mask"],
                             batch["positions"])
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        return {"nats": nats, "hits": (jnp.argmax(logits, -1) == batch["labels"])}

    def score(predictions, state):
        del state
        weights = eval_inputs["weights"]
        total = max(float(weights.sum()), 1.0)
        return {"mlm_loss": float((predictions["nats"] * weights).sum() / total),
                "mlm_accuracy": float((predictions["hits"] * weights).sum() / total)}

    evaluator = evaluation.Evaluator(predict_fn=jax.jit(predict), inputs=eval_inputs,
                                     batch_size=config.eval_batch_size, score_fn=score)

    def init_state(key):
        maxlen, k = config.data.maxlen, config.mlm.max_predictions
        params = model.init(key, jnp.zeros((1, maxlen), jnp.int32),
                            jnp.ones((1, maxlen), jnp.int32),
                            jnp.zeros((1, k), jnp.int32))["params"]
        return {"params": params, "opt_state": optimizer.init(params)}

    batches = data.EpochBatches(train_arrays, batch_size=min(config.batch_size,
                                                             count - valid_count),
                                seed=config.trainer.seed)
    task = trainer.Task(
        init_state=init_state,
        train_step=make_train_step(model, optimizer, tokenizer, config),
        batches=batches, evaluate=evaluator,
        fingerprint={"config": trainer.config_fingerprint(config, ignore=("mode",
                                                                          "eval_batch_size")),
                     "vocabulary": trainer.array_digest(np.frombuffer(
                         "\n".join(tokens).encode(), np.uint8)),
                     "train_data": trainer.array_digest(*train_arrays.values())})
    result = trainer.train(task, config.trainer, workdir)
    best = trainer.load_state(workdir, jax.eval_shape(init_state, jax.random.PRNGKey(0)),
                              step="best")
    params = jax.device_get(best["params"])
    output = workdir / "bert"
    bert.save_pretrained(output, sizes, params["bert"], extra_tensors=bert.head_tensors(params),
                         vocab=tokens)
    metrics = evaluator(best)
    summary = {**metrics, "uniform_loss": math.log(tokenizer.vocab_size),
               "best_step": result.best_step, "checkpoint": str(output)}
    trainer.update_summary(workdir, results=summary)
    print(f"checkpoint: {output} (config.json, model.safetensors, vocab.txt); fine-tune with "
          f"python launch.py nl2sql --config.bert.checkpoint={output}", flush=True)
    print(json.dumps(summary, allow_nan=False), flush=True)
    return summary
