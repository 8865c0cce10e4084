"""Command-line overrides for locked `ml_collections.ConfigDict`s.

`python launch.py NAME --config.trainer.num_steps=100 --config.loss.kind=am` reaches
`apply_overrides`, which refuses keys the config does not have (listing the valid ones) and
parses each value by the type of the default it replaces.
"""

import ast
import json
from collections.abc import Sequence

import ml_collections


class ConfigError(ValueError):
    """A command-line override names an unknown key or carries an unparsable value."""


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


def _parse_value(key: str, text: str, default):
    """Parses `text` into the type of `default` (bool, int, float, str, tuple, list, None)."""
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
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    if not isinstance(value, type(default)):
        raise ConfigError(
            f"--config.{key}: expected {type(default).__name__}, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `KEY=VALUE` overrides (dotted keys) to `config` in place.

    Raises:
      ConfigError: naming the key and listing the valid keys when a key is unknown, or
        naming the key and the expected type when the value does not parse.
    """
    valid = flat_keys(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form KEY=VALUE")
        key, text = item.split("=", 1)
        if key not in valid:
            raise ConfigError(
                f"unknown config key {key!r}; valid keys:\n  " + "\n  ".join(valid))
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        with node.ignore_type():
            node[leaf] = _parse_value(key, text, node[leaf])


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as indented JSON (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
