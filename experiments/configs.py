"""Command-line overrides, value checks and the trained run's saved config.

`python launch.py NAME --config.trainer.num_steps=100 --config.loss.kind=am` reaches
`apply_overrides`, which refuses keys the config does not have (listing the valid ones) and
parses each value by the type of the default it replaces. Each experiment's
`validate(config)` then checks every value with `require` and the helpers beside it, before
any file is read. A run that is not training (`mode=eval`, `mode=search`) takes the fields
that define the trained model from the training run's `WORKDIR/config.json`
(`merge_trained`).
"""

import ast
import json
import math
import pathlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import ml_collections

from experiments import trainer
from experiments.errors import UserError

# The file a training run writes its resolved config to; nothing else writes it.
CONFIG_FILE = "config.json"


class ConfigError(UserError, ValueError):
    """A command-line override names an unknown key or carries an unparsable value."""


class NotATrainedRun(UserError):
    """A mode that needs a finished training run was pointed at a workdir without one."""


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All leaf keys of `config` in dotted form, e.g. ["loss.kind", "trainer.num_steps"]."""
    keys = []
    for name, value in config.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return sorted(keys)


def value_at(config: ml_collections.ConfigDict, key: str) -> Any:
    """The value of the dotted `key` ("loss.kind") in `config`."""
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_value(key: str, text: str, default):
    """Parses `text` into the type of `default` (bool, int, float, str, tuple, list, None).

    A boolean is accepted only where the default is one: `True` is an `int` to Python but
    never a step count.
    """
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise ConfigError(f"--config.{key}: expected a boolean, got {text!r}")
    if isinstance(default, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if default is None:
            return text
        raise ConfigError(
            f"--config.{key}: cannot parse {text!r} as {type(default).__name__}") from None
    if default is None:
        return value
    if isinstance(value, bool):
        raise ConfigError(
            f"--config.{key}: expected {type(default).__name__}, got the boolean {text!r}")
    if isinstance(default, float) and _is_int(value):
        return float(value)
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    if not isinstance(value, type(default)):
        raise ConfigError(
            f"--config.{key}: expected {type(default).__name__}, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]
                    ) -> dict[str, Any]:
    """Applies `KEY=VALUE` overrides (dotted keys) to `config` in place.

    Returns:
      {dotted key: parsed value} of the overrides, the last one winning for a repeated key.

    Raises:
      ConfigError: naming the key and listing the valid keys when a key is unknown, or
        naming the key and the expected type when the value does not parse.
    """
    valid = flat_keys(config)
    applied = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form KEY=VALUE")
        key, text = item.split("=", 1)
        if key not in valid:
            raise ConfigError(
                f"unknown config key {key!r}; valid keys:\n  " + "\n  ".join(valid))
        *parents, leaf = key.split(".")
        node = value_at(config, ".".join(parents)) if parents else config
        with node.ignore_type():
            node[leaf] = _parse_value(key, text, node[leaf])
        applied[key] = node[leaf]
    return applied


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as indented JSON (tuples become lists; NaN and ±inf refused)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str,
                      allow_nan=False)


# ----------------------------------------------------------------------------------------
# Checks for `validate(config)`: each names the `--config.` key and the value it refuses.


def require(condition: bool, key: str, value, problem: str) -> None:
    """Raises ConfigError("--config.KEY=VALUE: problem") unless `condition` holds."""
    if not condition:
        raise ConfigError(f"--config.{key}={value!r}: {problem}")


def require_int(config: ml_collections.ConfigDict, key: str, minimum: int | None = None,
                meaning: str = "") -> None:
    """The value at `key` is an int (never a bool) and at least `minimum` when given.

    `meaning` documents a special value in the message, e.g. "0: once per epoch".
    """
    value = value_at(config, key)
    bound = "" if minimum is None else f" >= {minimum}"
    note = f" ({meaning})" if meaning else ""
    require(_is_int(value) and (minimum is None or value >= minimum), key, value,
            f"must be an integer{bound}{note}")


def require_number(config: ml_collections.ConfigDict, key: str, low: float, high: float, *,
                   low_open: bool = False, high_open: bool = False, why: str = "") -> None:
    """The value at `key` is a finite real number in the interval from `low` to `high`.

    Use math.inf for an unbounded side; the message writes the interval in the usual
    notation, e.g. "(0, 1)" or "[0, π/2)".
    """
    value = value_at(config, key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = number and math.isfinite(value) and (
        (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high))
    if high == math.inf:
        interval = f"> {low:g}" if low_open else f">= {low:g}"
    else:
        interval = (f"in {'(' if low_open else '['}{low:g}, "
                    f"{_bound_name(high)}{')' if high_open else ']'}")
    require(inside, key, value,
            f"must be a finite number {interval}" + (f" ({why})" if why else ""))


def _bound_name(bound: float) -> str:
    return "π/2" if bound == math.pi / 2 else f"{bound:g}"


def require_choice(config: ml_collections.ConfigDict, key: str, choices: Collection[str]
                   ) -> None:
    """The value at `key` is one of `choices` (pass the dispatch table itself)."""
    value = value_at(config, key)
    require(value in choices, key, value, f"must be one of {tuple(choices)}")


def require_trainer(config: ml_collections.ConfigDict, *, zero_num_steps: str = "",
                    zero_checkpoint_every: str = "") -> None:
    """Checks the `trainer.*` fields of `experiments.trainer.default_config`.

    Args:
      config: the experiment's whole config (keys are named `trainer.…`).
      zero_num_steps: what num_steps = 0 means for this experiment ("": not allowed).
      zero_checkpoint_every: likewise for checkpoint_every.
    """
    require_int(config, "trainer.num_steps", 0 if zero_num_steps else 1, zero_num_steps)
    require_int(config, "trainer.checkpoint_every", 0 if zero_checkpoint_every else 1,
                zero_checkpoint_every)
    require_int(config, "trainer.log_every", 1)
    require_int(config, "trainer.eval_every", 0, "0: only at the end")
    require_int(config, "trainer.keep_checkpoints", 1)
    require_int(config, "trainer.seed")
    require_choice(config, "trainer.best_mode", ("max", "min"))
    # The fields below joined the trainer later; a config built without them is still valid.
    present = set(config.trainer.keys())
    if "compute_dtype" in present:
        require_choice(config, "trainer.compute_dtype", trainer.COMPUTE_DTYPES)
    if "sync_every_step" in present:
        require_choice(config, "trainer.sync_every_step", trainer.SYNC_EVERY_STEP)
    if "ema_decay" in present:
        require_number(config, "trainer.ema_decay", 0, 1, high_open=True, why="0: off")
    if "prefetch" in present:
        require_int(config, "trainer.prefetch", 0, "0: none")
    if "keep_freed_host_memory" in present:
        require_choice(config, "trainer.keep_freed_host_memory", ("auto", "on", "off"))


# ----------------------------------------------------------------------------------------
# Modes other than training read the trained model's fields from the training run.


def is_training(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` trains: it has no `mode` field, or `mode` is "train"."""
    return "mode" not in config or config.mode == "train"


def read_trained_config(workdir: pathlib.Path) -> dict:
    """The config a training run saved in `workdir`, as a nested dict.

    Raises:
      NotATrainedRun: when `workdir` or its config.json is missing or unreadable.
    """
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise NotATrainedRun(f"{path} is missing: is {workdir} the workdir of a training run?")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotATrainedRun(f"{path}: not a readable config ({error})") from None
    if not isinstance(saved, dict):
        raise NotATrainedRun(f"{path}: not a config (a JSON object was expected)")
    return saved


def _saved_value(saved: Mapping, key: str):
    node = saved
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _as_type_of(value, default):
    """A JSON value in the type of the config's default (lists back to tuples)."""
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, float) and _is_int(value):
        return float(value)
    return value


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def merge_trained(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                  trained_fields: Sequence[str], explicit: Mapping[str, Any]) -> list[str]:
    """Sets the fields that define the trained model to the training run's saved values.

    Args:
      config: the config of a run that uses a trained workdir (e.g. `mode=eval`); changed in
        place.
      workdir: the training run's workdir, holding its config.json.
      trained_fields: dotted keys or prefixes ("model" covers every `model.*` leaf).
      explicit: {dotted key: value} given on the command line (`apply_overrides`'s result);
        each must agree with the saved value.

    Returns:
      The dotted keys that the saved config holds and that were set from it.

    Raises:
      NotATrainedRun: when config.json is missing or unreadable.
      ConfigError: "--config.KEY=VALUE conflicts with the trained run's SAVED
        (WORKDIR/config.json)" for an explicit value that differs from the saved one.
    """
    saved = read_trained_config(workdir)
    source = pathlib.Path(workdir) / CONFIG_FILE
    merged = []
    for key in flat_keys(config):
        if not any(key == field or key.startswith(field + ".") for field in trained_fields):
            continue
        try:
            value = _as_type_of(_saved_value(saved, key), value_at(config, key))
        except KeyError:
            continue  # a field newer than the run: its default is what the run used
        if key in explicit and explicit[key] != value:
            raise ConfigError(f"--config.{key}={_show(explicit[key])} conflicts with the "
                              f"trained run's {_show(value)} ({source})")
        *parents, leaf = key.split(".")
        node = value_at(config, ".".join(parents)) if parents else config
        with node.ignore_type():
            node[leaf] = value
        merged.append(key)
    return merged
