"""Training and evaluation of the character LM with a configurable attention pattern (SPEC §4).

A `models.transformer.DecoderLM` reads windows of `context` characters and predicts each
next character (mean cross-entropy in nats is the training loss). Evaluation is bits per
character over fixed, non-overlapping validation windows (`input_pipeline.
validation_windows`): the total −log2 p(target) divided by the number of targets, each
validation character counted once.
"""

import json
import math
import pathlib
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import trainer
from experiments.configs import ConfigError
from experiments.sparse_lm import input_pipeline
from models.transformer import DecoderLM, count_params, parse_pattern

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# (params, inputs [B, C] int32) -> logits [B, C, V] float32.
LogitsFn = Callable[[dict, jax.Array], jax.Array]


def check_model_config(config):
    """The parsed pattern tuple; ConfigError naming the key for a bad pattern or dtype."""
    try:
        pattern = parse_pattern(config.model.pattern)
    except ValueError as error:
        raise ConfigError(f"--config.model.pattern: {error}") from None
    if config.model.dtype not in DTYPES:
        raise ConfigError(f"--config.model.dtype must be one of {sorted(DTYPES)}, got "
                          f"{config.model.dtype!r}")
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
                     remat=config.model.remat, dtype=DTYPES[config.model.dtype])


def learning_rate_schedule(config, num_steps: int) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to end_fraction × peak at num_steps."""
    opt = config.optimizer
    warmup = min(opt.warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.learning_rate, warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1), end_value=opt.learning_rate * opt.end_fraction)


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
                       ) -> Callable[[dict], dict[str, float]]:
    """Bits per character of a model over fixed windows.

    bpc = Σ_windows Σ_t −log2 softmax(logits[t])[target t] / (number of targets), with
    inputs window[:-1] and targets window[1:]. The last batch is padded with zero-weight
    windows; the sum is accumulated in float64 on the host.

    Args:
      logits_fn: (params, inputs [B, C] int32) → logits [B, C, V].
      windows: int32 [num_windows, C + 1] (see `input_pipeline.validation_windows`).
      batch_size: windows per call.

    Returns:
      evaluate(params) → {"bpc": float, "valid_chars": number of targets}.
    """
    @jax.jit
    def window_bits(params, tokens, weights):  # [B, C + 1], [B] → [B]
        logits = logits_fn(params, tokens[:, :-1])
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return nats.sum(axis=-1) / math.log(2.0) * weights

    num_windows, targets_per_window = windows.shape[0], windows.shape[1] - 1

    def evaluate(params) -> dict[str, float]:
        total = 0.0
        for start in range(0, num_windows, batch_size):
            chunk = windows[start:start + batch_size]
            tokens = np.zeros((batch_size, windows.shape[1]), np.int32)
            tokens[:len(chunk)] = chunk
            weights = (np.arange(batch_size) < len(chunk)).astype(np.float32)
            total += float(np.sum(np.asarray(window_bits(params, tokens, weights), np.float64)))
        count = num_windows * targets_per_window
        return {"bpc": total / count, "valid_chars": float(count)}

    return evaluate


def load_text(config) -> tuple[str, str]:
    """(the text, a description of where it came from)."""
    if config.data.path:
        path = pathlib.Path(config.data.path)
        return input_pipeline.read_text(path), str(path)
    text = input_pipeline.stdlib_text(config.data.max_chars)
    return text, (f"the Python standard library's own source (first {len(text):,} "
                  "characters of its top-level *.py files, sorted)")


def tokens_per_second(history: list[dict], tokens_per_step: int) -> float:
    """Steady-state training throughput: the median logged steps/s (the first logging window,
    which includes compilation, is left out when there are others) × tokens per step."""
    rates = [row["steps_per_sec"] for row in history if "steps_per_sec" in row]
    if len(rates) > 1:
        rates = rates[1:]
    return statistics.median(rates) * tokens_per_step if rates else float("nan")


def run(config, workdir: pathlib.Path) -> dict[str, float]:
    """Trains (or resumes) in `workdir`; returns the validation bpc first, then throughput."""
    workdir = pathlib.Path(workdir)
    check_model_config(config)  # fail before reading the data
    context = config.model.context
    text, source = load_text(config)
    train_text, valid_text = input_pipeline.split_text(text, config.data.valid_fraction)
    vocab = input_pipeline.CharVocabulary.build(train_text)
    train_ids, valid_ids = vocab.encode(train_text), vocab.encode(valid_text)
    unseen = int(np.sum(valid_ids == input_pipeline.UNKNOWN_ID))
    print(f"data: {source}: {len(train_ids):,} training and {len(valid_ids):,} validation "
          f"characters, vocabulary {vocab.size} (with unknown; {unseen} validation characters "
          f"unseen in training)", flush=True)
    (workdir / "vocab.json").write_text(json.dumps({"chars": vocab.chars}) + "\n")

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
    task = trainer.Task(init_state=init_state, train_step=make_train_step(model, optimizer),
                        batches=batches, evaluate=lambda state: evaluator(state["params"]))

    start = time.perf_counter()
    result = trainer.train(task, config.trainer, workdir)
    train_seconds = time.perf_counter() - start
    final = [row for row in result.history if "eval_bpc" in row]
    bpc = final[-1]["eval_bpc"] if final else evaluator(result.state["params"])["bpc"]
    summary = {
        "valid_bpc": bpc,
        "uniform_bpc": math.log2(vocab.size),
        "tokens_per_sec": tokens_per_second(result.history, config.batch_size * context),
        "train_seconds": train_seconds,
        "steps": float(result.step),
        "num_params": float(count_params(result.state["params"])),
        "vocab_size": float(vocab.size),
        "valid_chars": float(windows.shape[0] * context),
    }
    previous = workdir / "summary.json"
    if not result.history and previous.exists():
        # A rerun of a finished run trains nothing: keep the timing of the run that did.
        timing = json.loads(previous.read_text())
        summary.update({k: timing[k] for k in ("tokens_per_sec", "train_seconds")})
    previous.write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary), flush=True)
    return summary
