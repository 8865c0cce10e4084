"""experiments.sentence_similarity.diagnose: vocabulary figures and the sweep's table."""

import json

import numpy as np

from experiments import sweep
from experiments.sentence_similarity import diagnose, input_pipeline


def test_untrained_characters_hand_computed():
    # Training reads ids 2 and 3; held-out reads 2, 4 (never trained), 1 (unknown), 4.
    train = np.array([[2, 3, 0], [3, 0, 0]])
    valid = np.array([[2, 4, 1], [4, 0, 0]])
    assert diagnose.untrained_characters(train, valid) == {
        "untrained_characters": 2, "untrained_share": 0.5}


def test_vocab_row_uses_the_experiment_split_and_vocabulary(tmp_path):
    path = tmp_path / "groups.tsv"
    # Groups 0..8 train, group 9 is held out (train_fraction 0.9); "z" only there.
    rows = [f"{g}\tab{g % 2}" for g in range(9) for _ in range(2)] + ["9\taz", "9\tab"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    groups, _ = input_pipeline.read_groups(path)
    split = input_pipeline.split_by_group(groups, 0.9)
    row = diagnose.vocab_row(groups, split, min_count=2, maxlen=32)
    # Counts over the file: a 20, b 19, 0 9, 1 9... z 1 → z is unknown at min_count 2.
    assert row["unknown_characters"] == 1 and row["characters"] == 4
    assert row["sentences_with_unknown"] == 1 and row["untrained_characters"] == 0
    row = diagnose.vocab_row(groups, split, min_count=1, maxlen=32)
    assert row["unknown_characters"] == 0 and row["untrained_characters"] == 1
    assert "| 1 |" in diagnose.vocab_table([row])


def test_eval_rows_keep_the_last_line_of_a_step_and_best_by_epoch(tmp_path):
    lines = [{"step": 10, "split": "eval", "top1": 0.2},
             {"step": 10, "split": "train", "loss": 1.0},
             {"step": 20, "split": "eval", "top1": 0.5},
             {"step": 20, "split": "eval", "top1": 0.4},   # a resumed run logs 20 again
             {"step": 30, "split": "eval", "top1": 0.3}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    curve = [row["top1"] for row in diagnose.eval_rows(path)]
    assert curve == [0.2, 0.4, 0.3]
    assert diagnose.best_by_epoch(curve, (1, 2, 3, 4)) == {1: 0.2, 2: 0.4, 3: 0.4, 4: None}


def test_table_row_reports_the_best_epoch_figures():
    evals = [{"top1": 0.1, "top5": 0.2, "top10": 0.3, "map_at_r": 0.05},
             {"top1": 0.4, "top5": 0.5, "top10": 0.6, "map_at_r": 0.35}]
    row = diagnose.table_row("r", "c", evals, "finished")
    assert row == ("| r | c | — | — | — | — | — | 2 | 0.4000 | 0.5000 | 0.6000 | 0.3500 "
                   "| finished |")
    assert row.count("|") == len(diagnose.TABLE_HEAD) + 1


def test_rows_have_unique_names_and_become_cells(tmp_path):
    cells = diagnose.cells("groups.tsv", tmp_path)
    assert len({cell.name for cell in cells}) == len(cells) == len(diagnose.ROWS)
    for cell in cells:
        assert cell.overrides[0] == "data.path=groups.tsv"
        sweep.resolve_config(cell.spec, cell.overrides)  # every override is a valid key
    # The embedding_init rows read the vectors the sweep trains under its root.
    vectors = f"model.embedding_init={tmp_path.resolve() / diagnose.CHAR_VECTORS_FILE}"
    assert vectors in {cell.name: cell for cell in cells}["bimax-s20-arcface-w2v-e8"].overrides


def test_recipe_preset_is_the_measured_row():
    """`sentence_similarity:recipe` resolves to the config of the diagnosis row it reports."""
    row = {r.name: r for r in diagnose.ROWS}[diagnose.RECIPE_ROW]
    preset = sweep.resolve_config("sentence_similarity:recipe",
                                  ("data.path=g.tsv", "trainer.progress_bar=false"))
    measured = sweep.resolve_config("sentence_similarity",
                                    ("data.path=g.tsv", *row.overrides,
                                     "trainer.progress_bar=false"))
    assert preset.to_dict() == measured.to_dict()
