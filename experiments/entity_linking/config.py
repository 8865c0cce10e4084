"""Configs of the CCKS2019 entity-linking experiment (kexue.fm/archives/6919).

    python launch.py entity_linking:demo            # embedded KB, generated texts, ~2 minutes
    python launch.py entity_linking \\
        --config.data.kb_path=../shared/data/entity_linking/ccks2019_el_kb_subset/kb_data
    python launch.py entity_linking --config.data.path=DIR   # kb_data, train.json[, develop.json]
    python launch.py entity_linking --workdir W --config.mode=link --config.link.input=TEXTS \\
        [--config.link.output=OUT.jsonl]           # one JSON line of mentions per text
    python -m experiments.sweep entity_linking:demo --root runs/el_ablation \\
        --axis "model.features=span,char,word,object;span;span,char,word" \\
        --axis model.word_vectors=true,false

Expected: the demo reaches end-to-end F1 well above the max-match baseline on its dev texts
(docs/entity_linking.md has the figures and the commands behind them).
"""

import math

import ml_collections

from experiments import configs, trainer
from experiments.entity_linking import train
from models import entity_linking

VARIANTS = ("", "smoke", "demo")

# What defines a trained model: link mode takes these from the training run's config.json
# (the KB and the statistics come from the same data, the vocabulary from the workdir).
TRAINED_FIELDS = ("model", "data")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The post's settings; `variant` picks "smoke" (tests) or "demo" (`make demo`) sizes."""
    if variant not in VARIANTS:
        raise configs.ConfigError(f"unknown variant {variant!r} of entity_linking; valid: "
                                  + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()
    # "train", or "link": read texts (link.input, one per line) and write their mentions
    # and kb_ids as JSON lines, with a trained workdir (train.MODES).
    config.mode = "train"

    config.data = ml_collections.ConfigDict()
    # A directory with the competition's kb_data and train.json (develop.json optional: its
    # predictions are written to the workdir); "": texts generated from a KB (below).
    config.data.path = ""
    # Without data.path: the kb_data file to generate texts from; "": the embedded KB.
    config.data.kb_path = ""
    # A word2vec text file ("COUNT DIM" then "WORD V1 ... VDIM"); "": vectors trained with
    # gensim on the KB descriptions at the start of the run (written to the workdir).
    config.data.word_vectors = ""
    config.data.skip_bad = False       # skip (and count) malformed records instead of failing
    config.data.generated_train = 4000  # ≥ 2; generated training texts (no data.path)
    config.data.generated_dev = 500     # ≥ 1; generated dev texts
    config.data.generated_seed = 0      # the generator's seed
    config.data.split_seed = 0          # data.path: the post's fixed permutation ...
    config.data.dev_folds = 9           # ≥ 2; ... every 9th text of it is dev (the post)
    config.data.min_count = 2           # ≥ 1; chars seen ≥ 2 times get an id (the post)
    config.data.maxlen = 64             # ≥ 1; characters per text (longer ones are cut)
    # ≥ 1; characters per description (the post reads whole descriptions; a CPU budget).
    config.data.description_maxlen = 256
    config.data.prune_threshold = 5.0   # > 0; drop a word when (rem+1)/(pred+1) ≥ 5 (the post)
    config.data.candidate_min_count = 2  # ≥ 1; restricted candidates: gold ids seen ≥ 2 times
    config.data.word_vector_dim = 100   # ≥ 1; on-the-fly vectors' size (the post's: unknown)
    config.data.word_vector_epochs = 5  # ≥ 1; gensim passes for on-the-fly vectors

    config.model = ml_collections.ConfigDict()
    config.model.embed_dim = 128        # ≥ 1; char embedding and word projection (the post)
    config.model.hidden_dim = 64        # ≥ 1; LSTM units per direction (the post)
    config.model.conv_dim = 128         # ≥ 1; NER Conv1D channels (the post)
    config.model.conv_width = 3         # ≥ 1; NER Conv1D kernel (the post)
    config.model.num_heads = 8          # ≥ 1; attention heads (the post)
    config.model.head_dim = 16          # ≥ 1; per-head width (the post)
    config.model.link_hidden = 128      # ≥ 1; the link scorer's hidden layer (the post)
    config.model.dropout = 0.2          # in [0, 1); embeddings and scorer input (the post)
    # The linking features read, comma-separated, any of span,char,word,object (the post:
    # all four); an ablation leaves some out.
    config.model.features = ",".join(entity_linking.FEATURES)
    config.model.word_vectors = True    # add the projected frozen word vectors (the post)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # > 0; Adam (the post; Keras defaults)
    config.optimizer.eps = 1e-7            # > 0; Keras's Adam epsilon

    config.batch_size = 64              # ≥ 1; the post
    config.epochs = 120                 # ≥ 1; the post
    config.eval_batch_size = 256        # ≥ 1; texts or (mention, candidate) pairs per call

    config.inference = ml_collections.ConfigDict()
    config.inference.start_threshold = 0.4  # in [0, 1); p_start > 0.4 starts a mention (post)
    config.inference.end_threshold = 0.4    # in [0, 1); p_end > 0.4 ends one (the post)
    config.inference.link_threshold = 0.1   # in [0, 1]; drop a mention below it (the post)
    # Link mode: output NIL (with the threshold chosen on dev at training) instead of
    # dropping a mention whose best candidate scores low; training reports both ways.
    config.inference.nil = False

    config.link = ml_collections.ConfigDict()
    config.link.input = ""              # mode=link: UTF-8 texts, one per line ("-": stdin)
    config.link.output = ""             # mode=link: JSON lines file; "": stdout

    config.trainer = trainer.default_config()
    config.trainer.num_steps = 0        # 0: epochs × batches per epoch
    config.trainer.eval_every = 0       # 0: once per epoch (the post keeps the best dev F1)
    config.trainer.checkpoint_every = 0  # 0: once per epoch
    config.trainer.best_metric = "f1"   # the best dev F1's weights are kept (the post)
    config.trainer.ema_decay = 0.9999   # EMA of all weights for evaluation (the post)
    config.trainer.log_every = 50

    if variant == "demo":
        config.data.generated_train = 1500
        config.data.generated_dev = 300
        config.data.maxlen = 40
        config.data.description_maxlen = 64
        config.data.word_vector_dim = 32
        config.epochs = 8
        config.batch_size = 32
        config.trainer.eval_every = 0
    if variant == "smoke":
        config.data.generated_train = 300
        config.data.generated_dev = 60
        config.data.maxlen = 32
        config.data.description_maxlen = 32
        config.data.word_vector_dim = 8
        config.data.word_vector_epochs = 2
        config.model.embed_dim = 32
        config.model.hidden_dim = 16
        config.model.conv_dim = 32
        config.model.num_heads = 2
        config.model.head_dim = 8
        config.model.link_hidden = 32
        config.batch_size = 16
        config.trainer.num_steps = 60
        config.trainer.eval_every = 30
        config.trainer.checkpoint_every = 30
        config.trainer.log_every = 10
        config.trainer.progress_bar = False
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before any file is read.

    Raises:
      experiments.configs.ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    configs.require_choice(config, "mode", train.MODES)
    for key in ("data.path", "data.kb_path", "data.word_vectors", "link.input",
                "link.output"):
        configs.require(isinstance(configs.value_at(config, key), str), key,
                        configs.value_at(config, key), "must be a string (a path or empty)")
    configs.require(isinstance(config.data.skip_bad, bool), "data.skip_bad",
                    config.data.skip_bad, "must be true or false")
    configs.require(not (config.data.path and config.data.kb_path), "data.kb_path",
                    config.data.kb_path, "give data.path (real texts) or data.kb_path "
                    "(generated texts), not both")
    configs.require_int(config, "data.generated_train", 2)
    for key in ("data.generated_dev", "data.min_count", "data.maxlen",
                "data.description_maxlen", "data.candidate_min_count", "data.word_vector_dim",
                "data.word_vector_epochs", "model.embed_dim", "model.hidden_dim",
                "model.conv_dim", "model.conv_width", "model.num_heads", "model.head_dim",
                "model.link_hidden", "batch_size", "epochs", "eval_batch_size"):
        configs.require_int(config, key, 1)
    configs.require_int(config, "data.generated_seed")
    configs.require_int(config, "data.split_seed")
    configs.require_int(config, "data.dev_folds", 2)
    configs.require_number(config, "data.prune_threshold", 0, math.inf, low_open=True)
    configs.require_number(config, "model.dropout", 0, 1, high_open=True)
    features = config.model.features
    names = [n.strip() for n in features.split(",")] if isinstance(features, str) else [None]
    configs.require(all(n in entity_linking.FEATURES for n in names), "model.features",
                    features, "must be comma-separated names from "
                    f"{entity_linking.FEATURES}, at least one")
    configs.require(isinstance(config.model.word_vectors, bool), "model.word_vectors",
                    config.model.word_vectors, "must be true or false")
    for key in ("optimizer.learning_rate", "optimizer.eps"):
        configs.require_number(config, key, 0, math.inf, low_open=True)
    for key in ("inference.start_threshold", "inference.end_threshold"):
        configs.require_number(config, key, 0, 1, high_open=True)
    configs.require_number(config, "inference.link_threshold", 0, 1)
    configs.require(isinstance(config.inference.nil, bool), "inference.nil",
                    config.inference.nil, "must be true or false")
    configs.require_trainer(config, zero_num_steps="0: epochs × batches per epoch",
                            zero_checkpoint_every="0: once per epoch")
    if config.mode == "link":
        configs.require(bool(config.link.input), "link.input", config.link.input,
                        "mode=link needs --config.link.input=TEXTS (one per line, - for stdin)")
