"""Training and evaluation of the character LM with a configurable attention pattern.

The method, every config key and the results: docs/sparse_attention.md §5–§8.

A `models.transformer.DecoderLM` reads windows of `context` characters and predicts each
next character (mean cross-entropy in nats is the training loss). Evaluation is bits per
character over fixed, non-overlapping validation windows (`input_pipeline.
validation_windows`): the total −log2 p(target) divided by the number of targets, each
validation character counted once.
"""

import functools
import json
import math
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import configs, evaluation, schedules, trainer
from experiments.configs import ConfigError
from experiments.sparse_lm import input_pipeline
from kernels import attention
from models.transformer import DecoderLM, count_params, parse_pattern

# (params, inputs [B, C] int32) -> logits [B, C, V] float32.
LogitsFn = Callable[[dict, jax.Array], jax.Array]


def check_model_config(config):
    """The parsed pattern tuple of `config.model.pattern`.

    Raises:
      ConfigError: "--config.model.pattern: …" for a pattern outside the grammar, or
        "--config.model.attention_implementation must be one of …".
    """
    try:
        pattern = parse_pattern(config.model.pattern)
    except ValueError as error:
        raise ConfigError(f"--config.model.pattern: {error}") from None
    if config.model.attention_implementation not in attention.IMPLEMENTATIONS:
        raise ConfigError("--config.model.attention_implementation must be one of "
                          f"{attention.IMPLEMENTATIONS}, got "
                          f"{config.model.attention_implementation!r}")
    return pattern


def build_model(config, vocab_size: int) -> DecoderLM:
    """The DecoderLM of `config.model` (see `check_model_config` for the errors)."""
    pattern = check_model_config(config)
    return DecoderLM(vocab_size=vocab_size, max_len=config.model.context,
                     num_layers=config.model.num_layers, width=config.model.width,
                     num_heads=config.model.num_heads, pattern=pattern,
                     mlp_ratio=config.model.mlp_ratio, positions=config.model.positions,
                     tie_embeddings=config.model.tie_embeddings,
                     output_projection=config.model.output_projection,
                     remat=config.model.remat, dtype=trainer.compute_dtype(config.trainer),
                     attention_fn=functools.partial(
                         attention.attention,
                         implementation=config.model.attention_implementation))


def learning_rate_schedule(config, num_steps: int) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to end_fraction × peak at num_steps."""
    opt = config.optimizer
    return schedules.warmup_cosine(opt.learning_rate, num_steps, opt.warmup_steps,
                                   opt.end_fraction)


def make_optimizer(config, num_steps: int) -> optax.GradientTransformation:
    """Clipping, then AdamW with weight decay on matrices only (not biases or norm scales)."""
    opt = config.optimizer
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(opt.clip_norm),
        optax.adamw(learning_rate_schedule(config, num_steps), b2=opt.b2,
                    weight_decay=opt.weight_decay, mask=decay_mask))


def next_char_loss(params, model: DecoderLM, tokens: jax.Array) -> jax.Array:
    """Mean next-character cross-entropy in nats.

    Args:
      params: the model parameters.
      model: the DecoderLM.
      tokens: [B, C + 1] int32 windows; inputs tokens[:, :-1], targets tokens[:, 1:].

    Returns:
      Scalar float32.
    """
    logits = model.apply({"params": params}, tokens[:, :-1])  # [B, C, V]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def make_train_step(model: DecoderLM, optimizer: optax.GradientTransformation):
    """The pure `(state, batch, key) -> (state, metrics)` step the trainer jits."""
    def train_step(state, batch, key):
        del key  # no dropout; kept for the trainer's uniform signature
        loss, grads = jax.value_and_grad(next_char_loss)(state["params"], model,
                                                         batch["tokens"])
        params, opt_state, norms = trainer.apply_updates(state["params"], grads,
                                                         state["opt_state"], optimizer)
        return ({"params": params, "opt_state": opt_state},
                {"loss": loss, "train_bpc": loss / math.log(2.0), **norms})
    return train_step


def make_init_state(model: DecoderLM, optimizer: optax.GradientTransformation, context: int):
    def init_state(key):
        params = model.init(key, jnp.zeros((1, context), jnp.int32))["params"]
        return {"params": params, "opt_state": optimizer.init(params)}
    return init_state


def make_bpc_evaluator(logits_fn: LogitsFn, windows: np.ndarray, batch_size: int
                       ) -> evaluation.Evaluator:
    """Bits per character of a model over fixed windows.

    bpc = Σ_windows Σ_t −log2 softmax(logits[t])[target t] / (number of targets), with
    inputs window[:-1] and targets window[1:]; the per-window sums are added in float64 on
    the host.

    Args:
      logits_fn: (params, inputs [B, C] int32) → logits [B, C, V].
      windows: int32 [num_windows, C + 1] (see `input_pipeline.validation_windows`).
      batch_size: windows per call.

    Returns:
      An `evaluation.Evaluator`: state → {"bpc": float, "valid_chars": number of targets}.
    """
    @jax.jit
    def window_bits(params, batch):  # {"tokens": [B, C + 1]} → [B]
        tokens = batch["tokens"]
        logits = logits_fn(params, tokens[:, :-1]).astype(jnp.float32)
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return nats.sum(axis=-1) / math.log(2.0)

    count = windows.shape[0] * (windows.shape[1] - 1)

    def score(bits, state):
        return {"bpc": float(np.sum(bits, dtype=np.float64)) / count,
                "valid_chars": float(count)}

    return evaluation.Evaluator(predict_fn=window_bits, inputs={"tokens": windows},
                                score_fn=score, batch_size=batch_size)


def load_text(config) -> tuple[str, str]:
    """(the text, a description of where it came from)."""
    if config.data.path:
        path = pathlib.Path(config.data.path)
        return input_pipeline.read_text(path), str(path)
    text = input_pipeline.stdlib_text(config.data.max_chars)
    return text, (f"the Python standard library's own source (first {len(text):,} "
                  "characters of its top-level *.py files, sorted)")


def run(config, workdir: pathlib.Path) -> dict[str, float]:
    """Trains (or resumes) in `workdir`; returns the validation bpc first, then throughput."""
    workdir = pathlib.Path(workdir)
    check_model_config(config)  # fail before reading the data
    configs.require_trainer(config)  # e.g. a negative num_steps would train nothing
    context = config.model.context
    text, source = load_text(config)
    train_text, valid_text = input_pipeline.split_text(text, config.data.valid_fraction)
    vocab = input_pipeline.CharVocabulary.build(train_text)
    train_ids, valid_ids = vocab.encode(train_text), vocab.encode(valid_text)
    unseen = int(np.sum(valid_ids == input_pipeline.UNKNOWN_ID))
    print(f"data: {source}: {len(train_ids):,} training and {len(valid_ids):,} validation "
          f"characters, vocabulary {vocab.size} (with unknown; {unseen} validation characters "
          f"unseen in training)", flush=True)
    trainer.write_run_file(workdir, "vocab.json", json.dumps({"chars": vocab.chars}) + "\n")

    model = build_model(config, vocab.size)
    num_steps = config.trainer.num_steps
    optimizer = make_optimizer(config, num_steps)
    init_state = make_init_state(model, optimizer, context)
    batches = input_pipeline.WindowBatches(train_ids, context, config.batch_size,
                                           seed=config.trainer.seed)
    windows = input_pipeline.validation_windows(valid_ids, context, config.eval.max_windows)
    evaluator = make_bpc_evaluator(
        lambda params, inputs: model.apply({"params": params}, inputs), windows,
        config.eval.batch_size)
    fingerprint = {"config": trainer.config_fingerprint(config, ignore=("data.path",)),
                   "text": trainer.array_digest(train_ids, valid_ids)}
    task = trainer.Task(init_state=init_state, train_step=make_train_step(model, optimizer),
                        batches=batches, evaluate=evaluator, fingerprint=fingerprint)
    result = trainer.train(task, config.trainer, workdir)
    record = trainer.read_summary(workdir)
    bpc = result.last_eval.get("bpc")
    if bpc is None:
        bpc = evaluator(result.state)["bpc"]
    summary = {
        "valid_bpc": bpc,
        "uniform_bpc": math.log2(vocab.size),
        "tokens_per_sec": (record.get("steps_per_sec") or 0.0) * config.batch_size * context,
        "train_seconds": record.get("wall_seconds", {}).get("total"),
        "steps": float(result.step),
        "num_params": float(count_params(result.state["params"])),
        "vocab_size": float(vocab.size),
        "valid_chars": float(windows.shape[0] * context),
    }
    trainer.update_summary(workdir, results=summary)
    print(json.dumps(summary, allow_nan=False), flush=True)
    return summary
