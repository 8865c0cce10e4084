"""experiments.sweep: grid naming, reuse and resumption of runs, the markdown table, the
command line end to end, and the comparison scripts built on it."""

import json
import math
import pathlib

import pytest

from experiments import configs, sweep, trainer
from experiments.gan import sweep as gan_sweep
from experiments.sentence_similarity import compare as similarity_compare
from experiments.sparse_lm import compare as sparse_compare

EXPERIMENT = "sentence_similarity:smoke"


def _config_json(spec, overrides) -> str:
    return configs.to_json(sweep.resolve_config(spec, overrides)) + "\n"


def _write_run(workdir: pathlib.Path, spec, overrides, summary=None) -> None:
    """A workdir as launch.py and the trainer leave it: config.json (+ summary.json)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(_config_json(spec, overrides))
    if summary is not None:
        (workdir / "summary.json").write_text(json.dumps(summary) + "\n")


class FakeLaunch:
    """Stands in for `launch.run_experiment`: records each call and, like a run that
    reaches its last step, writes config.json and a summary.json at `num_steps` with the
    fields `summary(overrides)` returns."""

    def __init__(self, results=lambda overrides: {"top1": 0.5}, finish=True, summary=None):
        self.calls = []
        self.finish = finish
        self.summary = summary or (lambda overrides: {"final": {},
                                                      "results": results(overrides)})

    def __call__(self, spec, argv):
        self.calls.append((spec, list(argv)))
        workdir = pathlib.Path(argv[argv.index("--workdir") + 1])
        overrides = [arg[len("--config."):] for arg in argv if arg.startswith("--config.")]
        config = sweep.resolve_config(spec, overrides)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(configs.to_json(config) + "\n")
        if self.finish:
            trainer.write_summary(workdir, {"step": config.trainer.num_steps,
                                            **self.summary(overrides)})


# ------------------------------------------------------------------------------------------
# Cells and grids.


def test_grid_is_the_cartesian_product_with_readable_names():
    cells = sweep.grid(EXPERIMENT, ["epochs=2"], {"loss.kind": ["am", "softmax"],
                                            "model.final_state": ["last_step", "masked"]},
                       seeds=(0, 1))
    assert [cell.name for cell in cells] == [
        "kind-am__final_state-last_step", "kind-am__final_state-masked",
        "kind-softmax__final_state-last_step", "kind-softmax__final_state-masked"]
    assert cells[1].overrides == ("epochs=2", "loss.kind=am", "model.final_state=masked")
    assert cells[1].labels == {"loss.kind": "am", "model.final_state": "masked"}
    assert cells[1].runs() == [
        ("kind-am__final_state-masked-seed0", (*cells[1].overrides, "trainer.seed=0")),
        ("kind-am__final_state-masked-seed1", (*cells[1].overrides, "trainer.seed=1"))]


def test_grid_names_keep_whole_keys_when_last_parts_clash_and_make_values_file_safe():
    cells = sweep.grid("sparse_lm", (), {"model.dim": [1], "data.dim": ["local:32,atrous:32"]})
    assert [cell.name for cell in cells] == ["model.dim-1__data.dim-local_32_atrous_32"]
    assert [cell.name for cell in sweep.grid(EXPERIMENT, ["epochs=1"])] == ["base"]
    assert sweep.Cell("x", EXPERIMENT).runs() == [("x", ())]


def test_axis_values_split_on_semicolons_when_they_hold_commas():
    assert sweep.parse_axis("loss.kind=am,softmax") == ("loss.kind", ["am", "softmax"])
    assert sweep.parse_axis("model.pattern=full;local:4,atrous:4") == (
        "model.pattern", ["full", "local:4,atrous:4"])
    with pytest.raises(configs.ConfigError, match="KEY=VALUE1,VALUE2"):
        sweep.parse_axis("loss.kind")


# ------------------------------------------------------------------------------------------
# Reuse and resumption.


def test_a_finished_run_is_reused_without_running(tmp_path, monkeypatch, capsys):
    overrides = ["trainer.num_steps=20"]
    summary = {"step": 20, "results": {"top1": 0.25}}
    _write_run(tmp_path / "done", EXPERIMENT, overrides, summary)
    fake = FakeLaunch()
    monkeypatch.setattr(sweep, "run_in_process", fake)  # the default runner
    [row] = sweep.run_sweep([sweep.Cell("done", EXPERIMENT, tuple(overrides))], tmp_path)
    assert fake.calls == []
    assert row.summaries == [summary]
    assert row.workdirs == [tmp_path.resolve() / "done"]
    assert "done: finished at step 20, reusing" in capsys.readouterr().out


def test_an_unfinished_run_is_resumed_with_the_same_command(tmp_path):
    overrides = ("trainer.num_steps=20", "loss.kind=softmax")
    _write_run(tmp_path / "killed", EXPERIMENT, overrides)  # stopped before its end: no summary
    _write_run(tmp_path / "short", EXPERIMENT, overrides, {"step": 10})  # a summary short of 20
    fake = FakeLaunch()
    rows = sweep.run_sweep([sweep.Cell("killed", EXPERIMENT, overrides),
                            sweep.Cell("short", EXPERIMENT, overrides)], tmp_path, runner=fake)
    flags = ["--config.trainer.num_steps=20", "--config.loss.kind=softmax"]
    assert fake.calls == [(EXPERIMENT, ["--workdir", str(tmp_path.resolve() / name), *flags])
                          for name in ("killed", "short")]
    for row in rows:
        assert row.summaries[0]["step"] == 20 and row.summaries[0]["results"] == {"top1": 0.5}
        assert row.summaries[0] == trainer.read_summary(row.workdirs[0])
        assert row.summaries[0]["load_average"] >= 0


def test_seeds_run_in_their_own_workdirs_and_identical_cells_run_once(tmp_path):
    fake = FakeLaunch(results=lambda overrides: {"top1": float(overrides[-1][-1])})
    cell = sweep.Cell("am", EXPERIMENT, ("trainer.num_steps=20",), seeds=(3, 4))
    rows = sweep.run_sweep([cell, cell], tmp_path, runner=fake)
    assert [argv[1] for _, argv in fake.calls] == [str(tmp_path.resolve() / "am-seed3"),
                                                    str(tmp_path.resolve() / "am-seed4")]
    assert fake.calls[1][1][-1] == "--config.trainer.seed=4"
    assert [[s["results"]["top1"] for s in row.summaries] for row in rows] == [[3.0, 4.0]] * 2
    other = sweep.Cell("am", EXPERIMENT, ("trainer.num_steps=30",))
    with pytest.raises(sweep.SweepError, match="two cells are named 'am'"):
        sweep.run_sweep([cell, other], tmp_path, runner=fake)


def test_a_run_that_stops_before_its_last_step_stops_the_sweep(tmp_path):
    with pytest.raises(sweep.SweepError, match="ended before its last step"):
        sweep.run_sweep([sweep.Cell("cut", EXPERIMENT, ("trainer.num_steps=20",))], tmp_path,
                        runner=FakeLaunch(finish=False))


def test_a_longer_run_is_continued_and_another_config_refused(tmp_path):
    _write_run(tmp_path / "grow", EXPERIMENT, ["trainer.num_steps=10"], {"step": 10})
    seen = []

    def runner(spec, argv):  # the shorter run's summary must be gone before resuming
        seen.append((tmp_path / "grow" / "summary.json").exists())
        FakeLaunch()(spec, argv)

    [row] = sweep.run_sweep([sweep.Cell("grow", EXPERIMENT, ("trainer.num_steps=20",))], tmp_path,
                            runner=runner)
    assert seen == [False] and row.summaries[0]["step"] == 20
    with pytest.raises(sweep.SweepError,
                       match=r"holds another config \(loss.kind: am → softmax\)"):
        sweep.run_sweep([sweep.Cell("grow", EXPERIMENT, ("trainer.num_steps=20",
                                                   "loss.kind=softmax"))], tmp_path,
                        runner=runner)
    with pytest.raises(sweep.SweepError, match=r"a longer run \(trainer.num_steps: 20 → 5\)"):
        sweep.run_sweep([sweep.Cell("grow", EXPERIMENT, ("trainer.num_steps=5",))], tmp_path,
                        runner=runner)
    assert len(seen) == 1


def test_command_line_refuses_a_workdir_of_another_config_in_one_line(tmp_path, capsys):
    _write_run(tmp_path / "kind-am", EXPERIMENT, ["trainer.num_steps=20", "loss.kind=am"],
               {"step": 20})
    status = sweep.main([EXPERIMENT, "--root", str(tmp_path), "--axis", "loss.kind=am",
                         "--set", "trainer.num_steps=30", "--set", "epochs=3"])
    assert status == 2
    assert capsys.readouterr().err == (
        f"experiments.sweep: {tmp_path.resolve() / 'kind-am'} holds a longer run "
        "(epochs: 30 → 3); remove it or choose another root\n")


def test_config_differences_treat_auto_as_resolved_by_the_run():
    assert sweep.config_differences({"t": {"sync": "auto", "n": 2}},
                                    {"t": {"sync": "always", "n": 2}}) == {}
    assert sweep.config_differences({"t": {"n": 2}}, {"t": {"n": 3, "old": 1}}) == {
        "t.n": (3, 2), "t.old": (1, None)}


def test_config_differences_read_a_field_newer_than_the_run_as_its_default():
    wanted = {"t": {"n": 2, "new": 0.0}}
    assert sweep.config_differences(wanted, {"t": {"n": 2}}, {"t": {"n": 1, "new": 0.0}}) == {}
    # Set away from its default, the new field is a difference.
    assert sweep.config_differences({"t": {"n": 2, "new": 0.5}}, {"t": {"n": 2}},
                                    {"t": {"n": 1, "new": 0.0}}) == {"t.new": (0.0, 0.5)}
    assert sweep.config_differences(wanted, {"t": {"n": 2}}) == {"t.new": (None, 0.0)}


def test_collect_lists_only_cells_whose_every_run_finished(tmp_path):
    overrides = ("trainer.num_steps=20",)
    _write_run(tmp_path / "a-seed0", EXPERIMENT, [*overrides, "trainer.seed=0"], {"step": 20})
    _write_run(tmp_path / "a-seed1", EXPERIMENT, [*overrides, "trainer.seed=1"], {"step": 20})
    _write_run(tmp_path / "b-seed0", EXPERIMENT, [*overrides, "trainer.seed=0"], {"step": 20})
    _write_run(tmp_path / "b-seed1", EXPERIMENT, [*overrides, "trainer.seed=1"])  # unfinished
    rows = sweep.collect([sweep.Cell("a", EXPERIMENT, overrides, (0, 1)),
                          sweep.Cell("b", EXPERIMENT, overrides, (0, 1)),
                          sweep.Cell("c", EXPERIMENT, overrides)], tmp_path)
    assert [row.labels["name"] for row in rows] == ["a"]


# ------------------------------------------------------------------------------------------
# The table.


def test_table_values_and_mean_std_over_seeds_by_hand():
    rows = [
        sweep.Row({"name": "a|b"}, [{"results": {"top1": 0.5, "n": 7}, "wall_seconds":
                                     {"total": 120.0}}]),
        sweep.Row({"name": "seeds"}, [{"results": {"top1": 0.5}, "wall_seconds": {"total": 60}},
                                      {"results": {"top1": 0.7}},
                                      {"results": {"top1": 0.9}, "wall_seconds": {"total": 180}}]),
    ]
    columns = [sweep.Column("name"), sweep.Column("top-1", "results.top1", ".3f", per_seed=".1f"),
               sweep.Column("n", "results.n"),
               sweep.Column("minutes", "wall_seconds.total", ".1f", scale=1 / 60, suffix=" min"),
               sweep.Column("pct", "results.top1", ".0f", scale=100, suffix=" %")]
    lines = sweep.markdown_table(rows, columns).splitlines()
    assert lines[:2] == ["| name | top-1 | n | minutes | pct |", "|---|---|---|---|---|"]
    assert lines[2] == r"| a\|b | 0.500 | 7 | 2.0 min | 50 % |"
    # mean 0.7, sample std sqrt((0.04 + 0 + 0.04) / 2) = 0.2; minutes of 1 and 3: 2 ± 1.414.
    assert lines[3] == ("| seeds | 0.700 ± 0.200 [0.5, 0.7, 0.9] | — | 2.0 ± 1.4 min (n = 2) "
                        "| 70 ± 20 % |")


def test_mean_and_std_and_joined_paths():
    mean, std = sweep.mean_and_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    row = sweep.Row({}, [{"p": 0.25, "r": 0.5, "s": "x"}])
    both = sweep.Column("P / R", ("p", "r"), ".2f")
    assert sweep.table_cell(row, both) == "0.25 / 0.50"
    assert sweep.table_cell(sweep.Row({}, [{}]), both) == "—"
    assert sweep.table_cell(row, sweep.Column("s", "s")) == "x"
    assert sweep.lookup({"best": {"metrics": {"map": 0.3}}}, "best.metrics.map") == 0.3
    assert sweep.lookup({"best": None}, "best.metrics.map") is None


# ------------------------------------------------------------------------------------------
# The scripts built on it.


def test_similarity_compare_tabulates_tfidf_then_every_finished_run(tmp_path, monkeypatch):
    data = tmp_path / "groups.tsv"
    data.write_text("".join(f"{g}\t{text}\n" for g in range(20)
                            for text in (f"问题{g}怎么办", f"问题{g}如何处理")))
    out = tmp_path / "out"
    fake = FakeLaunch(results=lambda overrides: {
        "top1": 0.5 if "loss.kind=am" in overrides else 0.25, "top5": 0.75, "top10": 0.875,
        "map_at_r": 0.375, "faq_precision": 0.5, "faq_recall": 0.25})
    monkeypatch.setattr(sweep, "run_in_process", fake)
    argv = ["--data", str(data), "--epochs", "1", "--out", str(out), "--only", "am"]
    similarity_compare.main(argv)
    similarity_compare.main([*argv[:-1], "softmax:masked"])
    assert [argv[1] for _, argv in fake.calls] == [str((out / "runs" / "am").resolve()),
                                                    str((out / "runs" / "softmax-masked"
                                                         ).resolve())]
    lines = (out / "compare.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ")][1:]
    assert rows[0].startswith("| char 1-2-gram TF-IDF, no training (baseline.py) | — | 0.")
    assert rows[1:] == [  # RUNS order, both invocations' runs in one table
        "| am | last_step | 0.5000 | 0.7500 | 0.8750 | 0.3750 | 0.500 / 0.250 "
        "| 0.9172 / 0.9607 / 0.9709 |",
        "| softmax | masked | 0.2500 | 0.7500 | 0.8750 | 0.3750 | 0.500 / 0.250 | — |"]


def test_sparse_lm_compare_reads_bpc_and_throughput_from_the_summaries(tmp_path, monkeypatch):
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be\n" * 20)
    fake = FakeLaunch(summary=lambda overrides: {
        "results": {"valid_bpc": 2.5 if "model.pattern=full" in overrides else 2.0,
                    "tokens_per_sec": 12345.6, "uniform_bpc": 3.5, "vocab_size": 11,
                    "valid_chars": 64},
        "wall_seconds": {"total": 90.0}})
    monkeypatch.setattr(sweep, "run_in_process", fake)
    out = tmp_path / "out"
    sparse_compare.main(["--data", str(text), "--steps", "3", "--rate", "4", "--out", str(out),
                         "--workdirs", str(tmp_path / "runs"), "--only", "full,local/atrous"])
    assert [argv[1] for _, argv in fake.calls] == [
        str((tmp_path / "runs" / name).resolve()) for name in ("full", "local-atrous")]
    table = (out / "compare.md").read_text()
    assert "vocabulary 11 (uniform: 3.500 bpc)" in table and "64 characters" in table
    assert table.splitlines()[-2:] == [
        "| full | `full` | 2.5000 | 12,346 | 1.5 min |",
        "| local/atrous | `local:4,atrous:4` | 2.0000 | 12,346 | 1.5 min |"]
    saved = json.loads((out / "compare.json").read_text())
    assert saved["local/atrous"]["pattern"] == "local:4,atrous:4"
    assert saved["local/atrous"]["results"]["valid_bpc"] == 2.0


def test_gan_mixture_sweep_tabulates_ema_and_live_over_seeds(tmp_path, monkeypatch):
    def summary(overrides):  # seed 0 covers 7 modes, seed 1 all 8; live 6 and 8
        seed = int(overrides[-1].rpartition("=")[2])
        return {"final": {"modes_covered": 7 + seed, "high_quality": 0.5 + 0.25 * seed,
                          "live_modes_covered": 6 + 2 * seed, "live_high_quality": 0.5}}

    fake = FakeLaunch(summary=summary)
    monkeypatch.setattr(sweep, "run_in_process", fake)
    out = tmp_path / "mixture.md"
    assert gan_sweep.main(["mixture", "--seeds", "2", "--steps", "3", "--mixtures", "ring",
                           "--workdir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    cells = gan_sweep.mixture_cells(["ring"], "ring")
    assert len(fake.calls) == 2 * len({cell.slug for cell in cells})  # shared rows run once
    lines = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert lines[0] == ("| group | setting | modes covered (EMA) | high quality (EMA) "
                        "| modes covered (live) | high quality (live) |")
    # 7 and 8: mean 7.5, sample std √0.5 = 0.707; 50 % and 75 %: 62.5 ± 17.7 %.
    assert lines[1] == ("| presets | wgan_div (ring) | 7.5 ± 0.7 [7, 8] | 62.5 ± 17.7 % "
                        "| 7.0 ± 1.4 | 50.0 ± 0.0 % |")
    assert len(lines) == 1 + len(cells) + 2  # the real and uniform reference rows
    assert lines[-2].startswith("| reference | real samples (ring) | 8.0 ± 0.0 [8, 8] |")


# ------------------------------------------------------------------------------------------
# End to end: the command line on the real experiment.


@pytest.mark.skipif(not hasattr(trainer, "write_summary"), reason="no summary.json yet")
def test_command_line_sweeps_two_real_runs_then_reuses_them(tmp_path, capsys):
    root, table = tmp_path / "sweep", tmp_path / "table.md"
    argv = [EXPERIMENT, "--root", str(root), "--axis", "loss.kind=am,softmax",
            "--set", "trainer.num_steps=20", "--columns", "results.top1:.4f",
            "best.metrics.map_at_r:.4f", "steps_per_sec:.1f", "--out", str(table)]
    assert sweep.main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("[sweep] kind-") == 2 and "training" in first
    lines = table.read_text().splitlines()
    assert lines[2] == "| loss.kind | results.top1 | best.metrics.map_at_r | steps_per_sec |"
    for line, kind in zip(lines[4:], ["am", "softmax"]):
        summary = trainer.read_summary(root / f"kind-{kind}")
        assert summary["step"] == 20
        assert line.startswith(f"| {kind} | {summary['results']['top1']:.4f} | "
                               f"{summary['best']['metrics']['map_at_r']:.4f} | ")
    assert sweep.main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("finished at step 20, reusing") == 2 and "training" not in again
    assert table.read_text() == "\n".join(lines) + "\n"
