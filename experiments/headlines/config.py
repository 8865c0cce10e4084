"""Configs of the headline-generation experiment (https://kexue.fm/archives/6877).

    python launch.py headlines:demo                # generated pairs, under two minutes
    python launch.py headlines --workdir runs/bi \\
        --config.data.path=../shared/data/headline_generation/LCSTS_PART_II_via_CLGE/train.tsv \\
        --config.data.valid_path=../shared/data/headline_generation/LCSTS_PART_II_via_CLGE/val.tsv\\
        --config.data.test_path=../shared/data/headline_generation/LCSTS_PART_II_via_CLGE/test.tsv
    python launch.py headlines --workdir runs/bi --config.mode=eval --config.data.eval_path=F
    python launch.py headlines --workdir runs/bi --config.mode=generate < texts.txt

The unidirectional baseline: `--config.model.interaction=false --config.decode.kind=beam`.
Two-pass training: `--config.two_pass.first_workdir=runs/bi` (docs/headlines.md §4).
Every key is described in docs/headlines.md §6; results and their commands in §7.
"""

import math

import ml_collections

from experiments import configs, trainer
from experiments.headlines import decode
from kernels import decoding

VARIANTS = ("", "smoke", "demo")
MODES = ("train", "eval", "generate")
DIRECTIONS = ("l2r", "r2l")

# What defines a trained model: eval and generate take these from the training run's
# WORKDIR/config.json and refuse a flag that disagrees.
TRAINED_FIELDS = ("model", "data.max_text_len", "data.max_title_len", "data.min_count")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The post's settings (docs/headlines.md §6); `variant` picks "smoke" or "demo" sizes."""
    if variant not in VARIANTS:
        raise configs.ConfigError(f"unknown variant {variant!r} of headlines; valid: "
                                  + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()
    config.mode = "train"             # train | eval (score data.eval_path) | generate

    config.data = ml_collections.ConfigDict()
    config.data.path = ""             # title<TAB>text training file; "": generated pairs
    config.data.valid_path = ""       # validation file; "": valid_fraction of data.path
    config.data.valid_fraction = 0.05  # in (0, 1), used when valid_path is ""
    config.data.test_path = ""        # decoded and scored after training; "": validation
    config.data.eval_path = ""        # mode=eval: the title<TAB>text file to score
    config.data.skip_bad = False      # skip (and count) malformed rows instead of failing
    config.data.min_count = 32        # ≥ 1; chars seen ≥ 32 times (the post)
    config.data.max_text_len = 400    # ≥ 1; texts cut to 400 chars (the post)
    config.data.max_title_len = 398   # ≥ 1; titles cut to 398 chars (the post)
    config.data.generated_count = 4000  # ≥ 2; generated pairs (train + validation)
    config.data.generated_test_count = 200  # ≥ 1; generated test pairs

    config.model = ml_collections.ConfigDict()
    config.model.interaction = True   # the two decoders attend each other; False: baseline
    config.model.embed_dim = 128      # char_size = 128 (the post)
    config.model.encoder_units = 64   # BiLSTM(64 per direction) × 2 (the post)
    config.model.decoder_units = 128  # LSTM(128) × 2 per decoder (the post)
    config.model.heads = 8            # 8 heads × 16 (the post)
    config.model.head_dim = 16
    config.model.modulation_dim = 32  # SMLN MLP width, z_dim // 4 (the post)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # > 0; Keras Adam (the post)
    config.optimizer.eps = 1e-7            # > 0; Keras's epsilon

    config.two_pass = ml_collections.ConfigDict()
    # "": off. Else a trained workdir whose titles for the training texts become what each
    # decoder exposes to the other (SB-NMT's second pass); targets stay the gold titles.
    config.two_pass.first_workdir = ""
    config.two_pass.beam_size = 1     # ≥ 1; the first model's search width for pseudo-titles

    config.decode = ml_collections.ConfigDict()
    # auto | greedy | beam | bi_beam | rescore; auto: bi_beam with model.interaction,
    # else beam. bi_beam needs the interacting decoders, the others the baseline.
    config.decode.kind = "auto"
    config.decode.direction = "l2r"   # greedy and beam: which decoder
    config.decode.beam_size = 3       # ≥ 1; topk = 3 (the post)
    config.decode.max_len = 64        # ≥ 2; 64 steps (the post)
    config.decode.min_len = 0         # ≥ 0; end forbidden before this many tokens
    config.decode.no_repeat_ngram_size = 0  # ≥ 0; 0: off
    config.decode.alpha = 0.0         # ≥ 0; beam/rescore length penalty (0: the post's sums)
    # beam: "post" stops when a step's best candidate has ended (the seed's rule);
    # "exhaustive" returns the best finished title by score, which under raw sums is often
    # the empty one (docs/headlines.md §5). rescore's n-best always runs "exhaustive".
    config.decode.stop_rule = "post"
    config.decode.batch_size = 64     # ≥ 1; texts per decoding call
    config.generate = ml_collections.ConfigDict()
    config.generate.input = ""        # mode=generate: texts, one per line; "": stdin

    config.batch_size = 64            # ≥ 1; the post
    config.eval_batch_size = 256      # ≥ 1; teacher-forced validation loss
    config.trainer = trainer.default_config()
    config.trainer.num_steps = 100_000  # the post: 100 epochs × 1,000 steps
    config.trainer.eval_every = 1000
    config.trainer.checkpoint_every = 1000
    config.trainer.best_metric = "loss"  # held-out teacher-forced loss (the post: training)
    config.trainer.best_mode = "min"
    config.trainer.log_every = 100

    if variant in ("smoke", "demo"):
        config.data.min_count = 1
        config.data.max_title_len = 16
        config.decode.max_len = 16
    if variant == "demo":
        config.data.generated_count = 3000
        config.trainer.num_steps = 400
        config.trainer.eval_every = 200
        config.trainer.checkpoint_every = 200
        config.trainer.log_every = 50
    if variant == "smoke":
        config.data.generated_count = 200
        config.data.generated_test_count = 16
        config.model.embed_dim = 16
        config.model.encoder_units = 8
        config.model.decoder_units = 16
        config.model.heads = 2
        config.model.head_dim = 8
        config.model.modulation_dim = 8
        config.decode.max_len = 10
        config.decode.batch_size = 16
        config.batch_size = 16
        config.trainer.num_steps = 10
        config.trainer.eval_every = 5
        config.trainer.checkpoint_every = 5
        config.trainer.log_every = 5
        config.trainer.progress_bar = False
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before any file is read.

    Raises:
      experiments.configs.ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    configs.require_choice(config, "mode", MODES)
    for key in ("data.min_count", "data.max_text_len", "data.max_title_len",
                "data.generated_test_count", "model.embed_dim", "model.encoder_units",
                "model.decoder_units", "model.heads", "model.head_dim",
                "model.modulation_dim", "two_pass.beam_size", "decode.beam_size",
                "decode.batch_size", "batch_size", "eval_batch_size"):
        configs.require_int(config, key, 1)
    configs.require_int(config, "data.generated_count", 2)
    configs.require_int(config, "decode.max_len", 2)
    configs.require_int(config, "decode.no_repeat_ngram_size", 0, "0: off")
    configs.require_int(config, "decode.min_len", 0)
    configs.require(config.decode.min_len < config.decode.max_len, "decode.min_len",
                    config.decode.min_len, "must be < decode.max_len")
    configs.require_number(config, "data.valid_fraction", 0, 1, low_open=True,
                           high_open=True)
    configs.require(isinstance(config.model.interaction, bool), "model.interaction",
                    config.model.interaction, "must be true or false")
    for key in ("optimizer.learning_rate", "optimizer.eps"):
        configs.require_number(config, key, 0, math.inf, low_open=True)
    configs.require_number(config, "decode.alpha", 0, math.inf)
    configs.require_choice(config, "decode.stop_rule", decoding.STOP_RULES)
    configs.require_choice(config, "decode.kind", ("auto", *decode.KINDS))
    configs.require_choice(config, "decode.direction", DIRECTIONS)
    configs.require_trainer(config)
    if configs.is_training(config):
        decode_kind(config)
    if config.two_pass.first_workdir:
        configs.require(config.model.interaction, "two_pass.first_workdir",
                        config.two_pass.first_workdir,
                        "two-pass training needs model.interaction=true")
    if config.mode == "eval":
        configs.require(bool(config.data.eval_path), "data.eval_path", config.data.eval_path,
                        "mode=eval needs --config.data.eval_path=TITLE_TEXT_TSV")


def decode_kind(config: ml_collections.ConfigDict) -> str:
    """`decode.kind` with "auto" resolved, checked against `model.interaction`.

    Raises:
      experiments.configs.ConfigError: bi_beam on the baseline or another kind on the
        interacting model (its decoders only decode together).
    """
    kind = config.decode.kind
    if kind == "auto":
        return "bi_beam" if config.model.interaction else "beam"
    configs.require((kind == "bi_beam") == config.model.interaction, "decode.kind", kind,
                    f"does not fit model.interaction={str(config.model.interaction).lower()}: "
                    "bi_beam needs the interacting decoders, greedy, beam and rescore the "
                    "baseline (model.interaction=false)")
    return kind
