"""Configs of the sentence-similarity experiment (docs/sentence_similarity.md).

    python launch.py sentence_similarity \\
        --config.data.path=../shared/data/sentence_similarity/groups.tsv
    python launch.py sentence_similarity:demo          # generated corpus, about a minute
    python launch.py sentence_similarity --workdir W --config.mode=eval --config.data.eval_path=F
    python launch.py sentence_similarity --workdir W --config.mode=search \\
        --config.search.questions=F < QUERIES

Expected on the shared groups.tsv with the seed's budget (AM-Softmax): see the README table.
For real data use the `recipe` preset (docs/sentence_similarity.md §9): held-out top-1
0.586 against 0.524 (seed, masked, 10 epochs) and character TF-IDF's 0.535 on the shared
split, in 12 epochs:

    python launch.py sentence_similarity:recipe --workdir runs/recipe \\
        --config.data.path=../shared/data/sentence_similarity/groups.tsv
"""

import math

import ml_collections

from experiments import configs, trainer
from experiments.sentence_similarity import train
from kernels import margin_softmax
from models import sentence_encoder

VARIANTS = ("", "smoke", "demo", "recipe")

# What defines a trained model: a run that is not training (mode=eval, mode=search) takes
# these from the training run's WORKDIR/config.json and refuses a flag that disagrees.
# optimizer.decay sets the checkpoint's layout (a decaying rate keeps a step count).
TRAINED_FIELDS = ("model", "data.maxlen", "data.min_count", "loss", "optimizer.decay")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The seed's settings (docs/sentence_similarity.md §6); `variant` picks "smoke", "demo"
    or "recipe" (the seed's network made bidirectional and max-pooled, §9)."""
    if variant not in VARIANTS:
        raise configs.ConfigError(f"unknown variant {variant!r} of sentence_similarity; valid: "
                          + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()
    # "train", "eval" (score a trained workdir) or "search" (train.MODES). eval and search
    # read TRAINED_FIELDS from the training run's config.json and write nothing.
    config.mode = "train"

    config.data = ml_collections.ConfigDict()
    config.data.path = ""             # group_id<TAB>sentence file; "": the generated corpus
    config.data.eval_path = ""        # mode=eval: the groups file to score
    config.data.skip_bad = False      # skip (and count) malformed rows instead of failing
    # "§N" below: the section of docs/sentence_similarity.md that gives the seed's value.
    config.data.min_count = 5         # ≥ 1; vocabulary: chars seen ≥ 5 times (§4)
    config.data.maxlen = 32           # ≥ 1; truncate / right-pad to 32 characters (§4)
    # In (0, 1): groups below the 90% id cut train (§4: 90k/100k), the rest validate.
    config.data.train_fraction = 0.9
    config.data.generated_items = 48  # ≥ 1; generated corpus: items × 16 intents groups

    config.model = ml_collections.ConfigDict()
    config.model.embed_dim = 128      # Embedding(V, 128) (§2)
    config.model.hidden_dim = 128     # GRU(128) (§2)
    config.model.final_state = "last_step"  # the seed runs over the padding; or "masked"
    # False: the seed's one left-to-right GRU. True: a second GRU reads right to left and z
    # is 2 × hidden_dim wide (docs/sentence_similarity.md §9).
    config.model.bidirectional = False
    # "final": the seed's final state. "max": the maximum over the states at the real
    # characters (InferSent, arXiv 1705.02364; docs/sentence_similarity.md §9).
    config.model.pooling = "final"
    config.model.dropout = 0.0        # in [0, 1): dropout on the embedded characters (seed: 0)
    # A word2vec text file of character vectors (`char_vectors`): the vocabulary characters
    # it has start from their vectors (docs/sentence_similarity.md §9); "": the seed's
    # U(−0.05, 0.05) for every row.
    config.model.embedding_init = ""
    config.model.embedding_init_std = 0.0  # ≥ 0; > 0: rescale those vectors to this std

    config.loss = ml_collections.ConfigDict()
    config.loss.kind = "am"           # softmax | am | simpler_a | arcface (§3)
    config.loss.scale = 30.0          # s > 0; s = 30 (§3)
    # m = 0.35 (§3, AM-Softmax paper). am: m in [0, 1), since the target's cos θ − m
    # with m ≥ 1 could not beat a class at 90°; arcface: m in [0, π/2), the additive angle
    # (the paper uses 0.5); softmax and simpler_a use no margin (simpler-A's is cos 4θ).
    config.loss.margin = 0.35
    config.loss.chunk_size = 0        # >0: chunked loss over class chunks (large class counts)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # > 0; Keras Adam defaults (§5, docs/index.md §2)
    config.optimizer.eps = 1e-7            # > 0
    # "constant": the seed's fixed rate. "cosine": cosine decay from learning_rate to
    # final_fraction × learning_rate over the run's steps (docs/sentence_similarity.md §9).
    config.optimizer.decay = "constant"
    config.optimizer.final_fraction = 0.0  # in [0, 1]; used by decay = "cosine"

    config.batch_size = 100           # ≥ 1; §5
    config.epochs = 30                # ≥ 1; §5 (AM needs ~25, the others ~20)
    config.eval_batch_size = 1000     # ≥ 1

    config.search = ml_collections.ConfigDict()
    config.search.questions = ""      # mode=search: the stored questions (one per line)
    config.search.top = 5             # ≥ 1 answers shown per query

    config.trainer = trainer.default_config()
    config.trainer.num_steps = 0      # 0: epochs × batches per epoch
    config.trainer.eval_every = 0     # 0: once per epoch (§5: the seed evaluates every epoch)
    config.trainer.checkpoint_every = 0  # 0: once per epoch
    config.trainer.best_metric = "top1"  # keep the weights with the best top-1 (§5)
    config.trainer.log_every = 100

    if variant == "demo":
        config.epochs = 20
    if variant == "recipe":
        # docs/sentence_similarity.md §9 and results/sentence_similarity/diagnosis.md: what
        # lifted held-out top-1 above character TF-IDF on the public corpus.
        config.model.final_state = "masked"
        config.model.bidirectional = True
        config.model.pooling = "max"
        config.loss.scale = 20.0          # s 30 → 20: +1.8 points top-1 (diagnosis.md)
        config.loss.kind = "arcface"      # m = 0.35 rad: +1.0 over AM at 8 epochs (ibid.)
        config.optimizer.decay = "cosine"  # to 0 over 12 epochs: 0.584 → 0.586 (ibid.)
        config.epochs = 12
    if variant == "smoke":
        config.data.generated_items = 12
        config.data.min_count = 1
        config.model.embed_dim = 32
        config.model.hidden_dim = 32
        config.batch_size = 32
        config.trainer.num_steps = 20
        config.trainer.log_every = 5
        config.trainer.eval_every = 10
        config.trainer.checkpoint_every = 5
        config.trainer.progress_bar = False
    config.lock()
    return config


# The margin range each margin-using loss kind accepts (see the comment on loss.margin).
MARGIN_RANGES = {"am": (0.0, 1.0), "arcface": (0.0, math.pi / 2)}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before any file is read or any array built.

    Raises:
      experiments.configs.ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    configs.require_choice(config, "mode", train.MODES)
    for key in ("data.min_count", "data.maxlen", "data.generated_items", "model.embed_dim",
                "model.hidden_dim", "batch_size", "epochs", "eval_batch_size", "search.top"):
        configs.require_int(config, key, 1)
    configs.require_number(config, "data.train_fraction", 0, 1, low_open=True, high_open=True)
    configs.require_choice(config, "model.final_state", sentence_encoder.FINAL_STATES)
    configs.require_choice(config, "model.pooling", sentence_encoder.POOLINGS)
    configs.require_number(config, "model.dropout", 0, 1, high_open=True)
    configs.require_number(config, "model.embedding_init_std", 0, math.inf)
    configs.require_choice(config, "loss.kind", margin_softmax.KINDS)
    configs.require_number(config, "loss.scale", 0, math.inf, low_open=True)
    if config.loss.kind in MARGIN_RANGES:
        low, high = MARGIN_RANGES[config.loss.kind]
        configs.require_number(config, "loss.margin", low, high, high_open=True,
                               why=f"the range of loss.kind={config.loss.kind}")
    configs.require_int(config, "loss.chunk_size", 0, "0: the dense loss")
    for key in ("optimizer.learning_rate", "optimizer.eps"):
        configs.require_number(config, key, 0, math.inf, low_open=True)
    configs.require_choice(config, "optimizer.decay", train.DECAYS)
    configs.require_number(config, "optimizer.final_fraction", 0, 1)
    configs.require_trainer(config, zero_num_steps="0: epochs × batches per epoch",
                            zero_checkpoint_every="0: once per epoch")
    if config.mode == "eval":
        configs.require(bool(config.data.eval_path), "data.eval_path", config.data.eval_path,
                        "mode=eval needs --config.data.eval_path=GROUPS_FILE")
    if config.mode == "search":
        configs.require(bool(config.search.questions), "search.questions",
                        config.search.questions,
                        "mode=search needs --config.search.questions=FILE (one per line)")
