"""Configs of the sentence-similarity experiment (SPEC §1).

    python launch.py sentence_similarity --config.data.path=../shared/data/sentence_similarity/groups.tsv
    python launch.py sentence_similarity:demo          # generated corpus, about a minute
    python launch.py sentence_similarity --workdir W --config.mode=eval --config.data.eval_path=F
    python launch.py sentence_similarity --workdir W --config.mode=search --config.search.questions=F

Expected on the shared groups.tsv with the seed's budget (AM-Softmax): see the README table.
"""

import ml_collections

from experiments import trainer

VARIANTS = ("", "smoke", "demo")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The seed's settings (SPEC §1.2–§1.6); `variant` picks "smoke" or "demo" sizes."""
    if variant not in VARIANTS:
        from experiments.configs import ConfigError
        raise ConfigError(f"unknown variant {variant!r} of sentence_similarity; valid: "
                          + ", ".join(repr(v) for v in VARIANTS))
    config = ml_collections.ConfigDict()
    config.mode = "train"             # "train", "eval" (score a trained workdir) or "search"

    config.data = ml_collections.ConfigDict()
    config.data.path = ""             # group_id<TAB>sentence file; "": the generated corpus
    config.data.eval_path = ""        # mode=eval: the groups file to score
    config.data.skip_bad = False      # skip (and count) malformed rows instead of failing
    config.data.min_count = 5         # vocabulary: chars seen ≥ 5 times (SPEC §1.2)
    config.data.maxlen = 32           # truncate / right-pad to 32 characters (SPEC §1.2)
    config.data.train_fraction = 0.9  # groups below the 90% id cut train (SPEC §1.2: 90k/100k)
    config.data.generated_items = 48  # generated corpus: items × 16 intents groups

    config.model = ml_collections.ConfigDict()
    config.model.embed_dim = 128      # Embedding(V, 128) (SPEC §1.3)
    config.model.hidden_dim = 128     # GRU(128) (SPEC §1.3)
    config.model.final_state = "last_step"  # the seed runs over the padding; or "masked"

    config.loss = ml_collections.ConfigDict()
    config.loss.kind = "am"           # softmax | am | simpler_a | arcface (SPEC §1.4)
    config.loss.scale = 30.0          # s = 30 (SPEC §1.4)
    config.loss.margin = 0.35         # m = 0.35 (SPEC §1.4, AM-Softmax paper)
    config.loss.chunk_size = 0        # >0: chunked loss over class chunks (large class counts)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # Keras Adam defaults (SPEC §0.1, §1.5)
    config.optimizer.eps = 1e-7

    config.batch_size = 100           # SPEC §1.5
    config.epochs = 30                # SPEC §1.5 (AM needs ~25, the others ~20)
    config.eval_batch_size = 1000

    config.search = ml_collections.ConfigDict()
    config.search.questions = ""      # mode=search: the stored questions (one per line)
    config.search.top = 5             # answers shown per query

    config.trainer = trainer.default_config()
    config.trainer.num_steps = 0      # 0: epochs × batches per epoch
    config.trainer.eval_every = 0     # 0: once per epoch (SPEC §1.5 evaluates every epoch)
    config.trainer.checkpoint_every = 0  # 0: once per epoch
    config.trainer.best_metric = "top1"  # keep the weights with the best top-1 (SPEC §1.5)
    config.trainer.log_every = 100

    if variant == "demo":
        config.epochs = 20
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
