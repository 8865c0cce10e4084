"""Experiments: one package per post the project rebuilds (README; pages: docs/index.md §1).

Each experiment package `experiments.NAME` exposes:
  * a module docstring whose first line is shown by `python launch.py`;
  * `run(config, workdir: pathlib.Path) -> dict[str, float]`, which trains and evaluates and
    returns the summary metrics (the first key is the headline metric of `make demo`);
and its config module `experiments.NAME.config` (`load_config`):
  * `get_config(variant: str = "") -> ml_collections.ConfigDict`, locked, with the seed's
    hyper-parameters as defaults; variants include "smoke" (tests) and "demo" (`make demo`);
  * `validate(config)`, which raises `configs.ConfigError` naming the `--config.` key of the
    first bad value, and reads no file;
  * `TRAINED_FIELDS`, the dotted keys (or prefixes) that define a trained model: a run that
    is not training (`config.mode` other than "train") takes them from the training run's
    `WORKDIR/config.json` (`configs.merge_trained`).
"""

import importlib
import types

from experiments.configs import ConfigError

# The experiments that have landed, in the order `python launch.py` lists them.
EXPERIMENTS = ("sentence_similarity", "gan", "sparse_lm", "entity_linking", "headlines",
               "nl2sql", "bert_pretrain")
# What `make demo` runs: every experiment but bert_pretrain, whose demo (about five minutes)
# only prepares a checkpoint for nl2sql (docs/nl2sql.md §5).
DEMOS = tuple(name for name in EXPERIMENTS if name != "bert_pretrain")
# The runs of `make demo`: each of those experiments' demo variant, and one architecture
# of docs/gan_architectures.md (conditional BN on generated shapes).
DEMO_RUNS = tuple(f"{name}:demo" for name in DEMOS) + ("gan:cbn_demo",)


def load(name: str) -> types.ModuleType:
    """Imports `experiments.<name>`; raises ConfigError listing the valid names if unknown."""
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"experiments.{name}")


def load_config(name: str) -> types.ModuleType:
    """Imports `experiments.<name>.config` (get_config, validate, TRAINED_FIELDS)."""
    load(name)
    return importlib.import_module(f"experiments.{name}.config")
