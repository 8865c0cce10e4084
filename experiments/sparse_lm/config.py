"""Configs of the sparse-attention character LM (docs/sparse_attention.md).

    python launch.py sparse_lm            # the README setting, on the stdlib's own source
    python launch.py sparse_lm \
        --config.data.path=../shared/data/sparse_attention_lm/tinyshakespeare_input.txt
    python launch.py sparse_lm --config.model.pattern=sparse:32 --config.model.remat=true
    python launch.py sparse_lm:demo                   # about 1 minute on 2 CPU cores
    python -m experiments.sparse_lm.compare --data FILE --steps 2000 --out results/sparse_lm

The headline metric is the validation bits per character (`valid_bpc`); a model that has
learnt nothing scores log2(V). The post reports no LM numbers (it is about cost,
docs/sparse_attention.md §1). Expected (2-core CPU, float32): demo 3.28 bpc (uniform
6.60) in under a minute; tiny Shakespeare, 2000 steps, Local/Atrous alternating 2.59 bpc
(uniform 6.04), the other patterns in results/sparse_lm/compare.md.
"""

import math

import jax
import ml_collections

from experiments import configs, trainer
from experiments.sparse_lm import train
from kernels import attention
from models import transformer

VARIANTS = ("", "smoke", "demo")

# What defines a trained model (its vocabulary comes from the text): for any mode that reads
# a training run's WORKDIR/config.json instead of training (experiments.configs.merge_trained).
TRAINED_FIELDS = ("model", "data.path", "data.max_chars", "data.valid_fraction")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The README setting; `variant` picks the "smoke" (tests) or "demo" sizes."""
    if variant not in VARIANTS:
        raise configs.ConfigError(f"unknown variant {variant!r} of sparse_lm; valid: "
                          + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.path = ""              # a UTF-8 text file; "": the stdlib's own source
    config.data.max_chars = 3_000_000  # ≥ 1; "": the first 3M characters of the stdlib's *.py
    config.data.valid_fraction = 0.1   # in (0, 1): the last 10% validates (contiguous)

    config.model = ml_collections.ConfigDict()
    # Per-layer attention pattern, comma = cycled over layers (models.transformer.parse_pattern).
    # Local and Atrous alternating: the post's alternative to Sparse
    # (docs/sparse_attention.md §1.2); 32 ≈ √1024.
    config.model.pattern = "local:32,atrous:32"
    # Characters per training window; the project's target is ≥ 1024
    # (docs/sparse_attention.md §6).
    config.model.context = 1024
    # A small model, sized for the pattern comparison on a 2-core CPU (3-13 minutes a run of
    # 2000 steps); on an accelerator raise width, layers, batch and steps from the command line.
    # Two layers are the fewest that let Local/Atrous alternation reach every position.
    config.model.num_layers = 2
    config.model.width = 64
    config.model.num_heads = 4         # head_dim 16 = width / heads
    config.model.mlp_ratio = 4
    config.model.positions = "learned"  # or "sinusoidal"
    # Untied output and no weight decay: in 200-step trials on tiny Shakespeare (Local(32),
    # lr 6e-3) they reached 2.45 nats against 2.55 for tied output with decay 0.1.
    config.model.tie_embeddings = False
    config.model.output_projection = True  # departure: docs/sparse_attention.md §7 item 5
    config.model.remat = False         # recompute blocks in the backward pass (long contexts)
    # How attention runs (kernels.attention.attention's `implementation`): "auto" is the CPU
    # kernel on a CPU for float32, XLA elsewhere; shown resolved. The compute dtype is
    # trainer.compute_dtype.
    config.model.attention_implementation = "auto"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 6e-3  # > 0: AdamW peak, after a linear warmup ...
    config.optimizer.warmup_steps = 30     # ≥ 0 ... then a cosine decay to end_fraction × peak
    config.optimizer.end_fraction = 0.1    # in [0, 1]
    config.optimizer.b2 = 0.99             # in [0, 1)
    config.optimizer.weight_decay = 0.0    # ≥ 0; on matrices only (ndim ≥ 2), not biases/norms
    config.optimizer.clip_norm = 1.0       # > 0: global gradient-norm clipping

    config.batch_size = 4                  # ≥ 1

    config.eval = ml_collections.ConfigDict()
    config.eval.max_windows = 0        # validation windows, evenly spaced (0: all of them)
    config.eval.batch_size = 8         # ≥ 1

    config.trainer = trainer.default_config()
    config.trainer.num_steps = 2000
    config.trainer.log_every = 25
    config.trainer.eval_every = 0      # 0: only at the end
    config.trainer.checkpoint_every = 500
    config.trainer.best_metric = "bpc"
    config.trainer.best_mode = "min"

    if variant == "demo":
        config.data.max_chars = 1_000_000
        config.eval.max_windows = 24
        config.trainer.num_steps = 600
        config.trainer.checkpoint_every = 600
    if variant == "smoke":
        config.data.max_chars = 60_000
        config.model.pattern = "local:8,atrous:8"
        config.model.context = 64
        config.model.num_layers = 2
        config.model.width = 32
        config.model.num_heads = 2
        config.optimizer.warmup_steps = 3
        config.batch_size = 8
        config.eval.max_windows = 16
        config.trainer.num_steps = 12
        config.trainer.log_every = 4
        config.trainer.checkpoint_every = 6
        config.trainer.progress_bar = False
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before the text is read or anything is traced.

    Raises:
      experiments.configs.ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    train.check_model_config(config)  # the pattern grammar and the attention implementation
    configs.require_int(config, "data.max_chars", 1)
    configs.require_number(config, "data.valid_fraction", 0, 1, low_open=True, high_open=True)
    for name in ("context", "num_layers", "width", "num_heads", "mlp_ratio"):
        configs.require_int(config, f"model.{name}", 1)
    model = config.model
    configs.require(model.width % model.num_heads == 0, "model.num_heads", model.num_heads,
                    f"must divide model.width={model.width}")
    configs.require_choice(config, "model.positions", transformer.POSITIONS)
    configs.require_number(config, "optimizer.learning_rate", 0, math.inf, low_open=True)
    configs.require_int(config, "optimizer.warmup_steps", 0)
    configs.require_number(config, "optimizer.end_fraction", 0, 1)
    configs.require_number(config, "optimizer.b2", 0, 1, high_open=True)
    configs.require_number(config, "optimizer.weight_decay", 0, math.inf)
    configs.require_number(config, "optimizer.clip_norm", 0, math.inf, low_open=True)
    configs.require_int(config, "batch_size", 1)
    configs.require_int(config, "eval.max_windows", 0, "0: all of them")
    configs.require_int(config, "eval.batch_size", 1)
    configs.require_trainer(config)


def resolve(config: ml_collections.ConfigDict) -> None:
    """Replaces "auto" in `model.attention_implementation` by what runs on this machine."""
    with config.unlocked():
        config.model.attention_implementation = attention.resolve_implementation(
            config.model.attention_implementation, platform=jax.default_backend(),
            dtype=trainer.compute_dtype(config.trainer),
            head_dim=config.model.width // config.model.num_heads)
