"""Configs of the NL2SQL experiment (https://kexue.fm/archives/6771; docs/nl2sql.md).

    python launch.py nl2sql:demo          # generated TableQA-format data, small random BERT
    python launch.py nl2sql --config.data.path=TableQA_train_excerpt/simple_train.json
    python launch.py nl2sql --config.data.path=train.json --config.data.eval_path=val.json \\
        --config.bert.checkpoint=DIR      # fine-tune a pretrained Chinese BERT (HF layout)

Expected: see docs/nl2sql.md §6.
"""

import math

import ml_collections

from experiments import configs, trainer
from models import bert

VARIANTS = ("", "smoke", "demo")
MODES = ("train",)
TRAINED_FIELDS = ("bert", "model", "data.maxlen")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The seed's settings (docs/nl2sql.md §1.5); `variant` picks "smoke" or "demo"."""
    if variant not in VARIANTS:
        raise configs.ConfigError(f"unknown variant {variant!r} of nl2sql; valid: "
                                  + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()
    config.mode = "train"             # only training (with evaluation) for now

    config.data = ml_collections.ConfigDict()
    config.data.path = ""             # questions NAME.json (NAME.tables.json beside); "": generated
    config.data.eval_path = ""        # evaluation questions; "": a held-out part of data.path
    config.data.valid_fraction = 0.2  # in (0, 1): held out of data.path when no eval_path
    config.data.skip_bad = False      # skip (and count) malformed records instead of failing
    config.data.maxlen = 160          # ≥ 8; longer examples are counted, left out of training
    config.data.generated_tables = 80      # ≥ 1; generated data: training tables
    config.data.generated_questions = 12   # ≥ 1; generated questions per table
    config.data.generated_eval_tables = 20  # ≥ 1; generated evaluation tables

    config.bert = ml_collections.ConfigDict()
    config.bert.checkpoint = ""       # Hugging Face BERT directory; "": random init, sizes below
    config.bert.hidden_size = 768     # ≥ 8 (BERT-base)
    config.bert.num_layers = 12       # ≥ 1
    config.bert.num_heads = 12        # ≥ 1, divides hidden_size
    config.bert.intermediate_size = 3072  # ≥ 1
    config.bert.hidden_act = "gelu"   # gelu (erf) | gelu_new (tanh) | relu
    config.bert.dropout = 0.1         # in [0, 1): hidden dropout

    config.model = ml_collections.ConfigDict()
    config.model.column_hidden = 256  # ≥ 1; Dense(256) of the additive column scorer

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.peak_lr = 5e-5   # > 0; reached at the end of warm-up
    config.optimizer.final_lr = 1e-5  # > 0; after the decay, constant
    config.optimizer.warmup_epochs = 1.0  # ≥ 0; linear warm-up from 0
    config.optimizer.decay_epochs = 1.0   # ≥ 0; linear decay peak -> final
    config.optimizer.eps = 1e-7           # > 0; Keras Adam

    config.batch_size = 32            # ≥ 1
    config.epochs = 15                # ≥ 1
    config.eval_batch_size = 64       # ≥ 1

    config.trainer = trainer.default_config()
    config.trainer.num_steps = 0      # 0: epochs × batches per epoch
    config.trainer.eval_every = 0     # 0: once per epoch
    config.trainer.checkpoint_every = 0  # 0: once per epoch
    config.trainer.best_metric = "logic_form"  # keep the best full-match weights
    config.trainer.log_every = 50

    if variant in ("demo", "smoke"):
        # A small encoder trained from scratch (docs/nl2sql.md §4): it sits on a plateau
        # (sel at the label prior) for ~700 updates before it learns to read each header at
        # its [CLS] and find it in the question, so it needs a high, slowly decaying rate.
        config.bert.hidden_size = 64
        config.bert.num_layers = 2
        config.bert.num_heads = 4
        config.bert.intermediate_size = 128
        config.bert.dropout = 0.0
        config.model.column_hidden = 64
        config.data.maxlen = 88              # the generated questions need ≤ 81 tokens
        config.data.generated_tables = 240   # 2,880 questions: 90 updates per epoch
        config.optimizer.peak_lr = 3e-3
        config.optimizer.final_lr = 2e-3
        config.optimizer.warmup_epochs = 0.5
        config.optimizer.decay_epochs = 4.0
        config.epochs = 12
        config.trainer.log_every = 30
        config.trainer.progress_bar = False
    if variant == "smoke":
        config.bert.hidden_size = 32
        config.bert.num_layers = 1
        config.bert.intermediate_size = 37
        config.model.column_hidden = 16
        config.data.generated_tables = 8
        config.data.generated_questions = 4
        config.data.generated_eval_tables = 4
        config.batch_size = 8
        config.eval_batch_size = 16
        config.trainer.num_steps = 2
        config.trainer.eval_every = 2
        config.trainer.checkpoint_every = 2
        config.trainer.log_every = 2
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before any file is read.

    Raises:
      experiments.configs.ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    configs.require_choice(config, "mode", MODES)
    configs.require_int(config, "data.maxlen", 8)
    for key in ("data.generated_tables", "data.generated_questions",
                "data.generated_eval_tables", "bert.hidden_size", "bert.num_layers",
                "bert.num_heads", "bert.intermediate_size", "model.column_hidden",
                "batch_size", "epochs", "eval_batch_size"):
        configs.require_int(config, key, 1)
    configs.require(config.bert.hidden_size % config.bert.num_heads == 0, "bert.num_heads",
                    config.bert.num_heads, "must divide bert.hidden_size")
    configs.require_choice(config, "bert.hidden_act", bert.ACTIVATIONS)
    configs.require_number(config, "bert.dropout", 0, 1, high_open=True)
    configs.require_number(config, "data.valid_fraction", 0, 1, low_open=True, high_open=True)
    for key in ("optimizer.peak_lr", "optimizer.final_lr", "optimizer.eps"):
        configs.require_number(config, key, 0, math.inf, low_open=True)
    for key in ("optimizer.warmup_epochs", "optimizer.decay_epochs"):
        configs.require_number(config, key, 0, math.inf)
    configs.require_trainer(config, zero_num_steps="0: epochs × batches per epoch",
                            zero_checkpoint_every="0: once per epoch")
