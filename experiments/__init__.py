"""Experiments: one module or package per seed model (SPEC §1–§7).

Each experiment module exposes:
  * a module docstring whose first line is shown by `python launch.py`;
  * `get_config(variant: str = "") -> ml_collections.ConfigDict`, locked, with the seed's
    hyper-parameters as defaults; variants include "smoke" (tests) and "demo" (`make demo`);
  * `run(config, workdir: pathlib.Path) -> dict[str, float]`, which trains and evaluates and
    returns the summary metrics (the first key is the headline metric of `make demo`).
"""

import importlib
import types

from experiments.configs import ConfigError

# The experiments that have landed, in the order `python launch.py` lists them.
EXPERIMENTS = ("sentence_similarity", "gan", "sparse_lm")


def load(name: str) -> types.ModuleType:
    """Imports `experiments.<name>`; raises ConfigError listing the valid names if unknown."""
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"experiments.{name}")
