"""experiments/headlines/lcsts_table.py: the LCSTS table from fake workdirs."""

import json

from experiments.headlines import lcsts_table


def _workdir(root, name, *, interaction, two_pass="", evals=(), curve=(), results=None):
    workdir = root / name
    workdir.mkdir()
    config = {"model": {"interaction": interaction}, "two_pass": {"first_workdir": two_pass},
              "decode": {"beam_size": 3, "max_len": 40}, "data": {"max_text_len": 100}}
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "summary.json").write_text(json.dumps({
        "step": 200, "steps_per_sec": 1.1, "wall_seconds": {"total": 300.0},
        "results": results or {}}))
    (workdir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "split": "train", "l2r_loss": left, "r2l_loss": right}) + "\n"
        for s, left, right in curve)
        + json.dumps({"step": 200, "split": "valid", "loss": 9.0}) + "\n")
    for file_name, metrics in evals:
        # What eval prints: the resolved config (indented JSON), log lines, the result.
        (workdir / file_name).write_text(json.dumps({"mode": "eval"}, indent=2)
                                         + "\nnoise line\n" + json.dumps(metrics) + "\n")
    return workdir


def _metrics(rouge):
    return {"rouge1": rouge, "rouge2": rouge / 2, "rougeL": rouge - 1, "bleu": 1.5,
            "first4": 20.0, "last4": 10.0, "r2l_share": 0.0}


def test_table_rows_labels_and_leakage(tmp_path):
    uni = _workdir(tmp_path, "headlines_lcsts_uni", interaction=False,
                   evals=[("eval_greedy_r2l.log", _metrics(21.0)),
                          ("eval_greedy_l2r.log", _metrics(20.0)),
                          ("eval_rescore.log", _metrics(23.0)),
                          ("eval_beam_l2r.log", _metrics(22.0)),
                          ("eval_beam_l2r_exhaustive.log", _metrics(2.0)),
                          ("eval_beam_l2r_exhaustive_alpha1.log", _metrics(12.0)),
                          ("eval_rescore_alpha1.log", _metrics(13.0)),
                          ("notes.json", {"ignored": 1})],
                   curve=[(100, 6.0, 6.5), (200, 5.0, 5.5)])
    bi = _workdir(tmp_path, "headlines_lcsts_bi", interaction=True,
                  evals=[("eval_bi_beam.log", _metrics(24.0))],
                  curve=[(100, 4.0, 4.5), (200, 2.0, 2.25)],
                  results={"valid_leak_gap": 1.234, "valid_l2r_loss": 3.0, "best_step": 200})
    bi2 = _workdir(tmp_path, "headlines_lcsts_bi2", interaction=True,
                   two_pass="runs/headlines_lcsts_bi")
    logs = tmp_path / "headlines_lcsts_logs"
    logs.mkdir()
    assert lcsts_table.read_run(logs) is None

    runs = [lcsts_table.read_run(w) for w in (bi, bi2, uni)]
    assert runs[2].evals[("greedy", "r2l", "", "")]["rouge1"] == 21.0  # the file's last line
    assert runs[2].evals[("rescore", "", "", "1")]["rouge1"] == 13.0
    table = lcsts_table.results_table(runs).splitlines()
    labels = [line.split(" | ")[0].lstrip("| ") for line in table[2:]]
    assert labels == ["uni: greedy (L2R)", "uni: greedy (R2L)", "uni: beam 3 (L2R)",
                      "uni: beam 3 (L2R), exhaustive search",
                      "uni: beam 3 (L2R), exhaustive search, length penalty α = 1",
                      "uni: L2R beam 3 n-best + R2L rescoring",
                      "uni: L2R beam 3 n-best + R2L rescoring, length penalty α = 1",
                      "bi: bidirectional beam 3"]
    assert "| 24.00 | 12.00 | 23.00 | 1.50 | 20.00 | 10.00 | 0.00 |" in table[-1]

    curve = lcsts_table.leakage_curve_table(runs).splitlines()
    assert curve[0].count("|") == 6  # step, uni L2R, uni sum, bi sum, bi2 sum
    assert curve[2] == "| 100 | 6.000 | 12.500 | 8.500 | – |"
    assert curve[3] == "| 200 | 5.000 | 10.500 | 4.250 | – |"

    held = lcsts_table.held_out_table(runs)
    assert "| headlines_lcsts_bi | 3.000 | – | – | – | 1.234 | 200 |" in held
    assert lcsts_table.run_label(runs[1]) == "bi + two-pass"


def test_main_writes_page_with_commands(tmp_path):
    _workdir(tmp_path, "headlines_lcsts_uni", interaction=False,
             evals=[("eval_greedy_l2r.log", _metrics(20.0))], curve=[(25, 7.0, 7.0)])
    commands = tmp_path / "commands.sh"
    commands.write_text("python launch.py headlines --workdir runs/x\n")
    out = tmp_path / "out" / "lcsts.md"
    code = lcsts_table.main(["--runs", str(tmp_path / "headlines_lcsts_uni"),
                             str(tmp_path / "missing"), "--commands", str(commands),
                             "--out", str(out)])
    page = out.read_text()
    assert code == 0
    assert "python launch.py headlines --workdir runs/x" in page
    assert "| headlines_lcsts_uni | uni | 200 | 100 | 40 | 1.10 | 5.0 min |" in page
    assert lcsts_table.main(["--runs", str(tmp_path / "missing")]) == 2
