"""launch.py: listing, config printing, override parsing."""

import ml_collections
import pytest

import launch
from experiments import configs


def test_listing_names_every_experiment(capsys):
    assert launch.main([]) == 0
    out = capsys.readouterr().out
    assert "sentence_similarity" in out and "benchmarks" in out


def _config():
    config = ml_collections.ConfigDict({"lr": 1e-3, "name": "am", "on": True, "steps": 3,
                                        "shape": (2, 3), "inner": {"k": 1}})
    config.lock()
    return config


def test_overrides_parse_by_the_default_type():
    config = _config()
    configs.apply_overrides(config, ["lr=2", "name=softmax", "on=false", "steps=10",
                                     "shape=(4, 5)", "inner.k=7"])
    assert config.lr == 2.0 and isinstance(config.lr, float)
    assert (config.name, config.on, config.steps, config.shape, config.inner.k) == (
        "softmax", False, 10, (4, 5), 7)


@pytest.mark.parametrize("override, message", [
    ("steps=ten", "--config.steps: cannot parse .ten. as int"),
    ("steps=1.5", "--config.steps: expected int"),
    ("on=maybe", "expected a boolean"),
    ("nope=1", "unknown config key 'nope'; valid keys:\n  inner.k\n  lr\n  name\n  on"),
    ("steps", "not of the form KEY=VALUE"),
])
def test_bad_overrides_are_refused_with_the_key(override, message):
    with pytest.raises(configs.ConfigError, match=message.replace("(", r"\(")):
        configs.apply_overrides(_config(), [override])
