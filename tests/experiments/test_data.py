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


# Text decoding: every reader decodes bytes itself and names the file and line.

GROUPS = {"group_id": data.parse_int, "sentence": data.parse_nonempty}


def _bytes_file(path, content: bytes):
    path.write_bytes(content)
    return path


def test_bad_utf8_names_line_file_offset_and_column(tmp_path):
    # "0\ta\n" is bytes 0-3; line 2 is "1\t甄" (bytes 4-8: 甄 is 3 bytes) then 0xff at byte 9.
    path = _bytes_file(tmp_path / "g.tsv", "0\ta\n1\t甄".encode() + b"\xff\n2\tb\n")
    message = (r"g.tsv:2: not UTF-8 text \(byte 9 of the file, column 4: "
               r"invalid start byte 0xff\)")
    with pytest.raises(data.RecordError, match=message):
        data.read_tsv(path, GROUPS)
    with pytest.raises(data.RecordError, match=message):
        data.read_lines(path)
    # A multi-byte character cut short: 甄 is e7 94 84; the line ends after e7 94.
    path = _bytes_file(tmp_path / "cut.txt", b"ab\xe7\x94\nnext\n")
    with pytest.raises(data.RecordError, match=r"cut.txt:1: not UTF-8 text \(byte 2 of the "
                                               r"file, column 3: .* 0xe7 0x94\)"):
        data.read_lines(path)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"])
def test_empty_file_is_named_by_every_reader(tmp_path, content):
    path = _bytes_file(tmp_path / "e.tsv", content)
    for read in (data.read_lines, lambda p: data.read_tsv(p, GROUPS, skip_bad=True),
                 lambda p: data.read_jsonl(p, {"id": int}, skip_bad=True)):
        with pytest.raises(data.RecordError, match=r"e.tsv: empty file$"):
            read(path)


@pytest.mark.parametrize("stray, name", [
    (b"\r", r"carriage return U\+000D"),
    (b"\x00", r"NUL byte U\+0000"),
    (b"\x0b", r"control character U\+000B"),
    (b"\x0c", r"control character U\+000C"),
    (b"\x1c", r"control character U\+001C"),
    (b"\x1e", r"control character U\+001E"),
])
def test_stray_control_characters_are_named_with_line_and_column(tmp_path, stray, name):
    path = _bytes_file(tmp_path / "g.tsv", b"0\ta\n1\thalf" + stray + b"sentence\n2\tb\n")
    with pytest.raises(data.RecordError, match=rf"g.tsv:2: stray {name} at column 7 "):
        data.read_tsv(path, GROUPS)


def test_other_controls_such_as_a_backspace_are_kept_as_text(tmp_path):
    """Real paraphrase corpora have a stray backspace inside a sentence: it cuts nothing."""
    path = _bytes_file(tmp_path / "b.tsv", b"0\t\xe6\x8d\xa2\x08\xe5\x8d\xa1\n1\tx\x1by\n")
    columns, skipped = data.read_tsv(path, GROUPS)
    assert columns["sentence"] == ["换\x08卡", "x\x1by"] and not skipped


def test_crlf_endings_bom_tabs_and_a_last_line_without_newline(tmp_path):
    path = _bytes_file(tmp_path / "w.tsv", b"\xef\xbb\xbf0\ta\r\n\r\n1\tb c\t\r\n2\td")
    assert data.read_lines(path) == ["0\ta", "", "1\tb c\t", "2\td"]
    columns, skipped = data.read_tsv(path, {**GROUPS, "extra": str}, skip_bad=True)
    assert columns["line"] == [3] and columns["extra"] == [""]
    assert [e.line for e in skipped.errors] == [1, 4]   # two columns, not three
    lines, _ = data.read_numbered_lines(path, keep_endings=True)
    assert lines == [(1, "0\ta\r\n"), (2, "\r\n"), (3, "1\tb c\t\r\n"), (4, "2\td")]
    # Only the first three bytes are a BOM to drop; a "\r" that ends the file is stray.
    path = _bytes_file(tmp_path / "cr.txt", b"a\n\xef\xbb\xbfb\nc\r")
    lines, skipped = data.read_numbered_lines(path, skip_bad=True)
    assert lines == [(1, "a"), (2, "\ufeffb")]
    assert [str(e) for e in skipped.errors] == [
        f"{path}:3: stray carriage return U+000D at column 2 "
        '(a line may end with "\\r\\n", but "\\r" alone is not a line break)']


def test_read_lines_keeps_empty_lines_and_numbers(tmp_path):
    path = _bytes_file(tmp_path / "q.txt", b"\n\nthird\n\n")
    assert data.read_lines(path) == ["", "", "third", ""]
    assert data.read_lines(_bytes_file(tmp_path / "one.txt", b"\n")) == [""]
    with pytest.raises(data.RecordError, match=r"absent.txt: no such file"):
        data.read_lines(tmp_path / "absent.txt")


def test_skip_bad_skips_bad_lines_and_later_lines_keep_their_numbers(tmp_path):
    content = (b"0\ta\n"                  # 1 good
               b"0\thalf\rsentence\n"     # 2 stray "\r": one line, not two
               b"1\tb\xfe\n"              # 3 not UTF-8
               b"1\tc\x00\n"              # 4 NUL
               b"1\td\n"                  # 5 good
               b"x\te\n"                  # 6 malformed row
               b"2\tf\n")                 # 7 good
    path = _bytes_file(tmp_path / "g.tsv", content)
    columns, skipped = data.read_tsv(path, GROUPS, skip_bad=True)
    assert columns == {"line": [1, 5, 7], "group_id": [0, 1, 2], "sentence": ["a", "d", "f"]}
    assert [e.line for e in skipped.errors] == [2, 3, 4, 6]
    assert str(skipped.errors[3]).endswith("g.tsv:6: field 'group_id': not an integer: 'x'")
    assert "skipped 4 bad record(s)" in skipped.summary()
    lines, skipped = data.read_numbered_lines(path, skip_bad=True)
    assert [number for number, _ in lines] == [1, 5, 6, 7]
    assert [e.line for e in skipped.errors] == [2, 3, 4]
    # Without skip_bad the first problem in file order is raised.
    with pytest.raises(data.RecordError, match=r"g.tsv:2: stray carriage return"):
        data.read_tsv(path, GROUPS)
    path = _bytes_file(tmp_path / "h.tsv", b"0 a\n1\tb\xfe\n")
    with pytest.raises(data.RecordError, match=r"h.tsv:1: expected 2 tab-separated"):
        data.read_tsv(path, GROUPS)


def test_jsonl_skips_undecodable_lines_and_names_later_ones(tmp_path):
    path = _bytes_file(tmp_path / "q.jsonl", b'{"id": 1}\n{"id": "\xff"}\n\n{"id": 2}\n{"i": 3}\n')
    columns, skipped = data.read_jsonl(path, {"id": int}, skip_bad=True)
    assert columns == {"line": [1, 4], "id": [1, 2]}
    assert [e.line for e in skipped.errors] == [2, 5]
    assert str(skipped.errors[1]).endswith("q.jsonl:5: field 'id': missing")
    with pytest.raises(data.RecordError, match=r"q.jsonl:2: not UTF-8 text \(byte 18 "):
        data.read_jsonl(path, {"id": int})
