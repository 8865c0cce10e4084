"""experiments.configs: typed overrides, the shared `require` checks, merging a trained run."""

import json
import math

import ml_collections
import pytest

from experiments import configs


def _config():
    config = ml_collections.ConfigDict({
        "steps": 3, "lr": 1e-3, "on": True, "kind": "am", "shape": (2, 3),
        "model": {"width": 8, "state": "last_step"}, "data": {"maxlen": 32, "path": ""}})
    config.lock()
    return config


@pytest.mark.parametrize("override, message", [
    ("steps=True", "--config.steps: expected int, got the boolean 'True'"),
    ("steps=False", "--config.steps: expected int, got the boolean 'False'"),
    ("lr=True", "--config.lr: expected float, got the boolean 'True'"),
    ("steps=1.5", "--config.steps: expected int, got '1.5'"),
])
def test_booleans_and_fractions_are_refused_for_numbers(override, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.apply_overrides(_config(), [override])


def test_apply_overrides_returns_the_parsed_values_the_last_one_winning():
    config = _config()
    applied = configs.apply_overrides(config, ["steps=4", "lr=2", "steps=5", "on=false"])
    assert applied == {"steps": 5, "lr": 2.0, "on": False}
    assert (config.steps, config.lr, config.on) == (5, 2.0, False)


def test_require_names_the_key_and_the_value():
    configs.require(True, "a.b", 1, "never shown")
    with pytest.raises(configs.ConfigError, match=r"^--config\.loss\.kind='amm': bad$"):
        configs.require(False, "loss.kind", "amm", "bad")


@pytest.mark.parametrize("key, value, minimum, ok", [
    ("steps", 0, 1, False), ("steps", 1, 1, True), ("steps", -1, 0, False),
    ("steps", True, 0, False), ("steps", 2.0, 0, False), ("steps", -7, None, True),
])
def test_require_int(key, value, minimum, ok):
    config = _config()
    with config.ignore_type():
        config.steps = value
    if ok:
        configs.require_int(config, key, minimum)
    else:
        with pytest.raises(configs.ConfigError, match=f"--config.steps={value!r}: must be an "
                                                      "integer"):
            configs.require_int(config, key, minimum)


@pytest.mark.parametrize("value, kwargs, ok", [
    (0.5, dict(low=0, high=1, low_open=True, high_open=True), True),
    (0.0, dict(low=0, high=1, low_open=True, high_open=True), False),
    (1.0, dict(low=0, high=1, low_open=True, high_open=True), False),
    (1.0, dict(low=0, high=1), True),
    (math.inf, dict(low=0, high=math.inf, low_open=True), False),
    (math.nan, dict(low=0, high=math.inf), False),
    (1e9, dict(low=0, high=math.inf, low_open=True), True),
    (math.pi / 2, dict(low=0, high=math.pi / 2, high_open=True), False),
    (1.5707, dict(low=0, high=math.pi / 2, high_open=True), True),
])
def test_require_number(value, kwargs, ok):
    config = _config()
    config.lr = value
    if ok:
        configs.require_number(config, "lr", **kwargs)
    else:
        with pytest.raises(configs.ConfigError, match=r"--config\.lr=.*must be a finite"):
            configs.require_number(config, "lr", **kwargs)


def test_require_number_writes_the_interval():
    config = _config()
    config.lr = 2.0
    with pytest.raises(configs.ConfigError, match=r"in \[0, π/2\)"):
        configs.require_number(config, "lr", 0, math.pi / 2, high_open=True)
    with pytest.raises(configs.ConfigError, match=r"in \(0, 1\)"):
        configs.require_number(config, "lr", 0, 1, low_open=True, high_open=True)


def test_require_choice_lists_the_table_keys():
    config = _config()
    config.kind = "amm"
    with pytest.raises(configs.ConfigError,
                       match=r"--config\.kind='amm': must be one of \('am', 'softmax'\)"):
        configs.require_choice(config, "kind", {"am": 1, "softmax": 2})


def test_to_json_refuses_nan():
    config = _config()
    config.lr = math.nan
    with pytest.raises(ValueError):
        configs.to_json(config)


def _trained_workdir(tmp_path, saved):
    (tmp_path / "config.json").write_text(json.dumps(saved))
    return tmp_path


SAVED = {"steps": 99, "lr": 1, "shape": [4, 5], "model": {"width": 16, "state": "masked"},
         "data": {"maxlen": 20, "path": "train.tsv"}}


def test_merge_trained_takes_the_trained_fields_and_nothing_else(tmp_path):
    config = _config()
    merged = configs.merge_trained(config, _trained_workdir(tmp_path, SAVED),
                                   ("model", "data.maxlen", "shape", "lr"), explicit={})
    assert sorted(merged) == ["data.maxlen", "lr", "model.state", "model.width", "shape"]
    assert (config.model.width, config.model.state, config.data.maxlen) == (16, "masked", 20)
    assert config.shape == (4, 5) and config.lr == 1.0 and isinstance(config.lr, float)
    assert config.steps == 3 and config.data.path == ""     # not trained fields


def test_merge_trained_refuses_a_conflicting_flag_by_name(tmp_path):
    config = _config()
    workdir = _trained_workdir(tmp_path, SAVED)
    explicit = configs.apply_overrides(config, ["model.state=last_step"])
    with pytest.raises(configs.ConfigError) as error:
        configs.merge_trained(config, workdir, ("model",), explicit)
    assert str(error.value) == ("--config.model.state=last_step conflicts with the trained "
                                f"run's masked ({workdir / 'config.json'})")


def test_merge_trained_accepts_a_flag_equal_to_the_saved_value(tmp_path):
    config = _config()
    explicit = configs.apply_overrides(config, ["model.width=16", "steps=7"])
    configs.merge_trained(config, _trained_workdir(tmp_path, SAVED), ("model",), explicit)
    assert (config.model.width, config.steps) == (16, 7)


def test_merge_trained_keeps_the_default_of_a_field_the_run_did_not_have(tmp_path):
    config = _config()
    saved = {"model": {"width": 16}}
    assert configs.merge_trained(config, _trained_workdir(tmp_path, saved), ("model",),
                                 {}) == ["model.width"]
    assert config.model.state == "last_step"


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_a_workdir_without_a_readable_config_is_not_a_trained_run(tmp_path, content):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(configs.NotATrainedRun, match="config.json"):
        configs.merge_trained(_config(), tmp_path, ("model",), {})


def test_is_training():
    assert configs.is_training(_config())
    config = ml_collections.ConfigDict({"mode": "eval"})
    assert not configs.is_training(config)
    config.mode = "train"
    assert configs.is_training(config)
