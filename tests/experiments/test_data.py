"""experiments.data: record validation with file/line/field, image folders, batching."""

import numpy as np
import pytest
from PIL import Image

from experiments import data


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a", "id": 1}\n\n{"question": "b"\n{"id": 2}\n[1]\n')
    with pytest.raises(data.RecordError, match=r"q.jsonl:3: invalid JSON"):
        data.read_jsonl(path, {"question": str, "id": int})
    columns, skipped = data.read_jsonl(path, {"question": str, "id": int}, skip_bad=True)
    assert columns == {"line": [1], "question": ["a"], "id": [1]}
    messages = [str(e) for e in skipped.errors]
    assert messages[1].endswith("q.jsonl:4: field 'question': missing")
    assert messages[2].endswith("q.jsonl:5: a record must be a JSON object")


def test_tsv_field_parser_errors_and_header(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("id\tscore\n1\t0.5\n2\tabc\n")
    fields = {"id": data.parse_int, "score": float}
    with pytest.raises(data.RecordError, match=r"t.tsv:3: field 'score'"):
        data.read_tsv(path, fields, skip_header=True)


def test_image_folder_decodes_and_names_a_broken_file(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    images, paths, _ = data.read_image_folder(tmp_path, lambda im: np.asarray(im))
    assert images.shape == (3, 6, 8, 3) and len(paths) == 3
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(data.RecordError, match=r"broken.jpg: cannot decode image"):
        data.read_image_folder(tmp_path, lambda im: np.asarray(im))
    images, _, skipped = data.read_image_folder(tmp_path, lambda im: np.asarray(im),
                                                skip_bad=True)
    assert len(images) == 3 and len(skipped) == 1


def test_empty_image_folder_is_an_error(tmp_path):
    with pytest.raises(data.RecordError, match="no image files"):
        data.read_image_folder(tmp_path, np.asarray)


def test_epoch_batches_cover_each_epoch_once_and_reshuffle():
    batches = data.EpochBatches({"i": np.arange(10)}, batch_size=3, seed=0)
    epoch0 = np.concatenate([next(batches)["i"] for _ in range(3)])
    epoch1 = np.concatenate([next(batches)["i"] for _ in range(3)])
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9       # 1 example left over
    assert not np.array_equal(epoch0, epoch1)
    assert batches.state() == {"epoch": 1, "batch": 3}


def test_epoch_batches_resume_at_the_exact_batch():
    straight = data.EpochBatches({"i": np.arange(10)}, batch_size=3, seed=5)
    expected = [next(straight)["i"] for _ in range(8)]
    first = data.EpochBatches({"i": np.arange(10)}, batch_size=3, seed=5)
    seen = [next(first)["i"] for _ in range(4)]
    second = data.EpochBatches({"i": np.arange(10)}, batch_size=3, seed=5)
    second.restore(first.state())
    seen += [next(second)["i"] for _ in range(4)]
    for a, b in zip(expected, seen):
        np.testing.assert_array_equal(a, b)


def test_epoch_batches_reject_bad_sizes():
    with pytest.raises(ValueError, match="different numbers of examples"):
        data.EpochBatches({"a": np.zeros(3), "b": np.zeros(4)}, 2, 0)
    with pytest.raises(ValueError, match=r"batch_size 5 must be in \[1, 3\]"):
        data.EpochBatches({"a": np.zeros(3)}, 5, 0)


def test_csv_with_quotes_and_a_short_row(tmp_path):
    path = tmp_path / "bq.csv"
    path.write_text('sentence1,sentence2,label\n"a, b",c,1\nd,e\n')
    fields = {"s1": str, "s2": str, "label": data.parse_int}
    columns, skipped = data.read_tsv(path, fields, delimiter=",", skip_header=True,
                                     skip_bad=True)
    assert columns["s1"] == ["a, b"] and columns["line"] == [2]
    assert "bq.csv:3: expected 3 comma-separated columns" in str(skipped.errors[0])
