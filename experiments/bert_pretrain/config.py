"""Configs of BERT masked-LM pre-training (docs/nl2sql.md §5).

    python launch.py bert_pretrain:demo    # generated TableQA-style text, about a minute
    python launch.py bert_pretrain --config.data.path=A.txt,B.tsv \\
        --config.data.vocab_path=../shared/data/nl2sql_tableqa/chinese_bert_vocab/vocab.txt
    python launch.py nl2sql:demo --config.bert.checkpoint=runs/bert_pretrain-demo/bert

Writes WORKDIR/bert/{config.json, model.safetensors, vocab.txt} from the weights with the
lowest validation masked-LM loss. Expected: docs/nl2sql.md §5.
"""

import math

import ml_collections

from experiments import configs, trainer
from models import bert

VARIANTS = ("", "smoke", "demo")
TRAINED_FIELDS = ("bert", "data")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """A small BERT for a CPU; `variant` picks "smoke" (tests) or "demo" (`make demo`)."""
    if variant not in VARIANTS:
        raise configs.ConfigError(f"unknown variant {variant!r} of bert_pretrain; valid: "
                                  + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()
    config.mode = "train"             # only training (with evaluation)

    config.data = ml_collections.ConfigDict()
    # UTF-8 text files, comma-separated; a line is a document, a tab separates sentences
    # (the title<TAB>text corpora). "": generated TableQA-style questions and table cells.
    config.data.path = ""
    config.data.max_chars = 5_000_000  # ≥ 1: characters read, in file order
    # A BERT vocab.txt (one token per line); "": the corpus's characters, most frequent first.
    config.data.vocab_path = ""
    config.data.max_vocab = 8000      # ≥ 16: a built vocabulary's size, special tokens included
    config.data.maxlen = 128          # ≥ 8: tokens per window, [CLS] included
    config.data.valid_fraction = 0.05  # in (0, 1): the last windows validate
    config.data.generated_tables = 400     # ≥ 1; generated text: tables ...
    config.data.generated_questions = 12   # ≥ 1; ... and questions per table

    config.bert = ml_collections.ConfigDict()
    config.bert.hidden_size = 256     # ≥ 8
    config.bert.num_layers = 4        # ≥ 1
    config.bert.num_heads = 4         # ≥ 1, divides hidden_size
    config.bert.intermediate_size = 1024  # ≥ 1
    config.bert.hidden_act = "gelu"   # gelu (erf) | gelu_new (tanh) | relu
    config.bert.dropout = 0.1         # in [0, 1): hidden dropout

    config.mlm = ml_collections.ConfigDict()
    config.mlm.mask_prob = 0.15       # in (0, 1): share of real tokens predicted (BERT)
    config.mlm.max_predictions = 20   # ≥ 1: predicted tokens per window at most (BERT: 20/128)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # > 0: AdamW peak after a linear warm-up ...
    config.optimizer.warmup_steps = 100    # ≥ 0 ... then a cosine decay to end_fraction × peak
    config.optimizer.end_fraction = 0.1    # in [0, 1]
    config.optimizer.weight_decay = 0.01   # ≥ 0; on matrices only (BERT)
    config.optimizer.clip_norm = 1.0       # > 0: global gradient-norm clipping

    config.batch_size = 32            # ≥ 1
    config.eval_batch_size = 64       # ≥ 1

    config.trainer = trainer.default_config()
    config.trainer.num_steps = 5000
    config.trainer.eval_every = 500
    config.trainer.checkpoint_every = 500
    config.trainer.best_metric = "mlm_loss"
    config.trainer.best_mode = "min"
    config.trainer.log_every = 50

    if variant in ("demo", "smoke"):
        # The sizes of nl2sql:demo, so that its run can start from this checkpoint.
        config.bert.hidden_size = 64
        config.bert.num_layers = 2
        config.bert.num_heads = 4
        config.bert.intermediate_size = 128
        config.bert.dropout = 0.0
        config.optimizer.learning_rate = 3e-3
        config.optimizer.warmup_steps = 50
        config.trainer.num_steps = 1000
        config.trainer.eval_every = 250
        config.trainer.checkpoint_every = 500
        config.trainer.progress_bar = False
    if variant == "smoke":
        config.bert.hidden_size = 32
        config.bert.num_layers = 1
        config.bert.intermediate_size = 37
        config.data.generated_tables = 12
        config.data.generated_questions = 4
        config.data.maxlen = 32
        config.data.valid_fraction = 0.2
        config.mlm.max_predictions = 6
        config.optimizer.learning_rate = 1e-2
        config.optimizer.warmup_steps = 2
        config.batch_size = 16
        config.trainer.num_steps = 30
        config.trainer.eval_every = 15
        config.trainer.checkpoint_every = 15
        config.trainer.log_every = 15
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before any file is read.

    Raises:
      experiments.configs.ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    configs.require_choice(config, "mode", ("train",))
    configs.require_int(config, "data.maxlen", 8)
    configs.require_int(config, "data.max_vocab", 16)
    for key in ("data.max_chars", "data.generated_tables", "data.generated_questions",
                "bert.hidden_size", "bert.num_layers", "bert.num_heads",
                "bert.intermediate_size", "mlm.max_predictions", "batch_size",
                "eval_batch_size"):
        configs.require_int(config, key, 1)
    configs.require_int(config, "optimizer.warmup_steps", 0)
    configs.require(config.bert.hidden_size % config.bert.num_heads == 0, "bert.num_heads",
                    config.bert.num_heads, "must divide bert.hidden_size")
    configs.require(config.mlm.max_predictions < config.data.maxlen, "mlm.max_predictions",
                    config.mlm.max_predictions, "must be below data.maxlen")
    configs.require_choice(config, "bert.hidden_act", bert.ACTIVATIONS)
    configs.require_number(config, "bert.dropout", 0, 1, high_open=True)
    for key in ("data.valid_fraction", "mlm.mask_prob"):
        configs.require_number(config, key, 0, 1, low_open=True, high_open=True)
    for key in ("optimizer.learning_rate", "optimizer.clip_norm"):
        configs.require_number(config, key, 0, math.inf, low_open=True)
    configs.require_number(config, "optimizer.end_fraction", 0, 1)
    configs.require_number(config, "optimizer.weight_decay", 0, math.inf)
    configs.require_trainer(config)
