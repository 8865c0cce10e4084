"""The trainer benchmark and make demo's table, both read from summary.json."""

import launch
from experiments import trainer
from experiments.benchmarks import harness
from experiments.benchmarks import trainer as bench_trainer


def test_bench_trainer_quick_writes_a_row_per_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_trainer, "DEMOS", ("sentence_similarity",))
    monkeypatch.setitem(bench_trainer.STEPS, "sentence_similarity", (20, 12))
    report = harness.Report("trainer", repeats=1)
    bench_trainer.run(report, quick=True)
    assert [row.baseline for row in report.rows] == [True, False]
    for row in report.rows:
        assert row.median_s == 1.0 / row.extra["steps_per_sec"] > 0
        assert row.extra["wall_seconds"]["total"] > row.extra["wall_seconds"]["steady_steps"]
    assert report.speedup(report.rows[1]) > 0


def test_demo_table_reads_each_runs_summary(tmp_path):
    workdir = tmp_path / "run"
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.trainer.num_steps=12"]) == 0
    summary = trainer.read_summary(workdir)
    table = launch.demo_table({"sentence_similarity": summary})
    row = table.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "sentence_similarity" and row[2].strip() == "top1"
    assert float(row[3]) == round(summary["results"]["top1"], 4)
    assert row[5].strip() == f"{summary['wall_seconds']['total']:.1f} s"
    assert row[-2].strip() == summary["device_kind"]
