"""Modes other than training (sentence_similarity's eval and search) read the trained run's
config.json, refuse a conflicting flag by name, and write nothing into the workdir."""

import json
import math
import shutil

import pytest

import launch
from experiments import configs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run trained with the non-default final state `masked`."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.model.final_state=masked"]) == 0
    return workdir


def _snapshot(workdir):
    """Every path under workdir with its size and modification time (ns)."""
    return {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in [workdir, *workdir.rglob("*")]}


def _eval(capsys, workdir, *overrides):
    code = launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.mode=eval",
                        f"--config.data.eval_path={workdir / 'generated_groups.tsv'}",
                        *overrides])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_uses_the_trained_final_state_without_the_flag(trained, capsys):
    code, out, _ = _eval(capsys, trained, "--config.model.final_state=masked")
    assert code == 0
    with_flag = json.loads(out.strip().splitlines()[-1])
    code, out, _ = _eval(capsys, trained)
    assert code == 0
    without_flag = json.loads(out.strip().splitlines()[-1])
    assert without_flag == with_flag
    assert '"final_state": "masked"' in out  # the printed, resolved config


def test_eval_refuses_a_flag_that_conflicts_with_the_trained_run(trained, capsys):
    code, _, err = _eval(capsys, trained, "--config.model.final_state=last_step")
    assert code == 2 and "Traceback" not in err
    assert (f"launch.py: --config.model.final_state=last_step conflicts with the trained "
            f"run's masked ({trained / 'config.json'})") in err
    code, _, err = _eval(capsys, trained, "--config.data.maxlen=16")
    assert code == 2 and "--config.data.maxlen=16 conflicts with the trained run's 32" in err


def test_eval_and_search_leave_the_workdir_untouched(trained, tmp_path, capsys, monkeypatch):
    before = _snapshot(trained)
    saved_config = (trained / "config.json").read_text()
    code, out, _ = _eval(capsys, trained)
    assert code == 0
    questions = tmp_path / "faq.txt"
    questions.write_text("冰箱多少钱\n护照的有效期是多久\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("冰箱要多少钱\n"))
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(trained),
                        "--config.mode=search", f"--config.search.questions={questions}"]) == 0
    assert "冰箱要多少钱\t" in capsys.readouterr().out
    assert _snapshot(trained) == before
    assert (trained / "config.json").read_text() == saved_config
    assert json.loads(saved_config)["mode"] == "train"


def test_eval_summary_has_no_nan(trained, capsys):
    _, out, _ = _eval(capsys, trained)
    last = json.loads(out.strip().splitlines()[-1])
    assert all(math.isfinite(value) for value in last.values())


def test_eval_of_singleton_groups_is_one_clear_line(trained, tmp_path, capsys):
    singletons = tmp_path / "singletons.tsv"
    singletons.write_text("1\t冰箱多少钱\n2\t护照的有效期是多久\n3\t怎么开通花呗\n",
                          encoding="utf-8")
    code = launch.main(["sentence_similarity:smoke", "--workdir", str(trained),
                        "--config.mode=eval", f"--config.data.eval_path={singletons}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"launch.py: {singletons}: 3 groups, none with two or more sentences" in err


@pytest.mark.parametrize("missing", ["workdir", "config.json", "vocab.json", "checkpoints"])
def test_eval_of_an_unfinished_workdir_is_one_clear_line(trained, tmp_path, capsys, missing):
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    groups = trained / "generated_groups.tsv"
    target = workdir / missing if missing != "workdir" else workdir
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    code = launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.mode=eval", f"--config.data.eval_path={groups}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("launch.py: ")
    assert (missing if missing != "workdir" else "does not exist") in err
    assert err.count("\n") == 1
    if missing == "workdir":
        assert not workdir.exists()  # eval creates no workdir


def test_configs_merge_refuses_a_conflict_for_direct_callers(trained):
    from experiments.sentence_similarity import config as config_lib
    config = config_lib.get_config("smoke")
    explicit = configs.apply_overrides(config, ["mode=eval", "loss.kind=softmax"])
    with pytest.raises(configs.ConfigError, match="--config.loss.kind=softmax conflicts"):
        configs.merge_trained(config, trained, config_lib.TRAINED_FIELDS, explicit)
