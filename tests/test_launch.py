"""launch.py: listing, config printing, override parsing, one-line errors."""

import os

import ml_collections
import pytest

import launch
from experiments import configs, data, trainer
from experiments.errors import Preempted


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


# ----------------------------------------------------------------------------------------
# Errors a user can act on: one line on stderr, a non-zero exit, no traceback (unless --debug).


def _run_raising(monkeypatch, tmp_path, capsys, error, *flags):
    import experiments.sentence_similarity as experiment

    def run(config, workdir):
        raise error

    monkeypatch.setattr(experiment, "run", run)
    code = launch.main(["sentence_similarity:smoke", "--workdir", str(tmp_path / "run"),
                        *flags])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("error", [
    configs.ConfigError("--config.x=1: bad"), data.RecordError("f.tsv", 3, "sentence", "empty"),
    trainer.WorkdirLockedError("locked"), trainer.CheckpointError("no checkpoint 5"),
    trainer.NonFiniteError("loss is nan at step 7"), configs.NotATrainedRun("no config.json"),
])
def test_user_errors_are_one_line_and_exit_2(monkeypatch, tmp_path, capsys, error):
    code, err = _run_raising(monkeypatch, tmp_path, capsys, error)
    assert code == 2
    assert err.splitlines()[-1] == f"launch.py: {error}" and "Traceback" not in err


def test_debug_adds_the_traceback_and_keeps_the_exit_code(monkeypatch, tmp_path, capsys):
    code, err = _run_raising(monkeypatch, tmp_path, capsys, configs.ConfigError("bad"),
                             "--debug")
    assert code == 2 and "Traceback" in err and err.splitlines()[-1] == "launch.py: bad"


def test_preempted_exits_with_its_own_code(monkeypatch, tmp_path, capsys):
    code, err = _run_raising(monkeypatch, tmp_path, capsys, Preempted(40))
    assert code == Preempted.exit_code == 143
    assert err.splitlines()[-1] == f"launch.py: {Preempted(40)}" and "Traceback" not in err


def test_a_real_bug_keeps_its_traceback(monkeypatch, tmp_path, capsys):
    with pytest.raises(ZeroDivisionError):
        _run_raising(monkeypatch, tmp_path, capsys, ZeroDivisionError("a bug"))


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    workdir = tmp_path / "file"
    workdir.write_text("not a directory")
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err == f"launch.py: --workdir {workdir} is a file, not a directory\n"
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"launch.py: --workdir {workdir / 'run'} cannot be created: ")
    assert err.count("\n") == 1


def test_a_workdir_without_write_permission_is_one_line(tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "read_only"
    workdir.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: make os.access answer as for a user
        monkeypatch.setattr(launch.os, "access", lambda path, mode: False)
    else:
        workdir.chmod(0o555)
    try:
        assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir)]) == 2
    finally:
        workdir.chmod(0o755)
    err = capsys.readouterr().err
    assert err == f"launch.py: --workdir {workdir} is not writable by this user\n"
    assert list(workdir.iterdir()) == []


def test_only_training_writes_config_json(tmp_path, capsys):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    code = launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.mode=eval", f"--config.data.eval_path={tmp_path / 'g.tsv'}"])
    assert code == 2 and "config.json is missing" in capsys.readouterr().err
    assert list(workdir.iterdir()) == []
