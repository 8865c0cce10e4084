r"""Local text files decoded by Python, record validation, deterministic batching.

Text readers (`read_lines`, `read_numbered_lines`, `read_tsv`, `read_jsonl`) read the file's
bytes and decode them as UTF-8 one line at a time, so that every problem names the file and
the 1-based line. The rules, decided here once for every reader:

* Lines end at "\n". A "\r\n" ending counts as a line ending too (Windows files read the
  same as Unix ones); a "\r" anywhere else is a stray control character, not a line break,
  so line numbers agree with `wc -l` and `sed -n Np`.
* A UTF-8 byte-order mark at the very start of the file is dropped.
* A line that is not valid UTF-8 is an error naming the byte offset in the file and the
  column in the line.
* Inside a line, a control character that some reader would take for a line or record
  break (a stray "\r", vertical tab, form feed, U+001C to U+001E) or a NUL byte is an error
  naming its column; other controls (a stray backspace, as real corpora have) are text.
* A file with no bytes (or only the byte-order mark) is an error: "empty file".

A bad line or record raises `RecordError` naming the file, the 1-based line and the field;
with `skip_bad=True` it is skipped instead, and every skip is counted and reported in the
returned `Skipped` log, so nothing is dropped silently and the lines after a skipped one keep
their own numbers. Images still go through `datasets`' imagefolder builder on local files
(nothing is fetched: HF_DATASETS_OFFLINE=1).

Batching (`EpochBatches`) is a pure function of (seed, epoch, position): each epoch has its
own permutation, and the position is part of every checkpoint, so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

import csv
import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from experiments.errors import UserError

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


class RecordError(UserError, ValueError):
    """A malformed record: names the file, the 1-based line and the offending field."""

    def __init__(self, path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {problem}")


@dataclasses.dataclass
class Skipped:
    """The records skipped under `skip_bad=True`, one `RecordError` each."""

    errors: list[RecordError] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        """One line per skipped record (at most 20), after a count."""
        lines = [f"skipped {len(self.errors)} bad record(s)"]
        lines += [f"  {error}" for error in self.errors[:20]]
        if len(self.errors) > 20:
            lines.append(f"  ... and {len(self.errors) - 20} more")
        return "\n".join(lines)


def _require_file(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists() or path.is_dir():
        raise RecordError(path, None, None, "no such file")
    return path


_BOM = b"\xef\xbb\xbf"
# The controls that some reader would take for the end of a line or of the text (a lone
# "\r", vertical tab, form feed, the file/group/record separators that str.splitlines
# breaks on) and NUL: each would shift line numbers or cut a record somewhere. "\r" is
# stray once a "\r\n" ending has been taken off. Other C0 controls (a backspace inside a
# sentence, as real paraphrase corpora have) are kept as text.
_STRAY_CONTROL = re.compile(r"[\x00\x0b\x0c\x0d\x1c-\x1e]")
_CONTROL_NAMES = {"\x00": "NUL byte", "\r": "carriage return"}


def _undecodable(path, number: int, line_offset: int, chunk: bytes,
                 error: UnicodeDecodeError) -> RecordError:
    column = len(chunk[:error.start].decode("utf-8")) + 1  # the prefix did decode
    bad = " ".join(f"0x{byte:02x}" for byte in chunk[error.start:error.end])
    return RecordError(path, number, None,
                       f"not UTF-8 text (byte {line_offset + error.start} of the file, "
                       f"column {column}: {error.reason} {bad})")


def _stray_control(path, number: int, match: re.Match) -> RecordError:
    char = match.group()
    name = _CONTROL_NAMES.get(char, "control character")
    problem = f"stray {name} U+{ord(char):04X} at column {match.start() + 1}"
    if char == "\r":
        problem += ' (a line may end with "\\r\\n", but "\\r" alone is not a line break)'
    else:
        problem += " (a character some readers take for a line or record break)"
    return RecordError(path, number, None, problem)


def _decode_each_line(path, raw: bytes, start: int, keep_endings: bool
                      ) -> Iterator[tuple[int, str | RecordError]]:
    chunks = raw[start:].split(b"\n")
    last = len(chunks) - 1
    if not chunks[last]:          # the file ends with "\n": nothing follows the last line
        chunks.pop()
    offset = start
    for number, chunk in enumerate(chunks, start=1):
        line_offset, offset = offset, offset + len(chunk) + 1
        ending = "" if number - 1 == last else "\n"
        if ending and chunk.endswith(b"\r"):
            chunk, ending = chunk[:-1], "\r\n"
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, _undecodable(path, number, line_offset, chunk, error)
            continue
        stray = _STRAY_CONTROL.search(text)
        if stray:
            yield number, _stray_control(path, number, stray)
        else:
            yield number, text + ending if keep_endings else text


def _decoded_lines(path, *, keep_endings: bool = False
                   ) -> Iterator[tuple[int, str | RecordError]]:
    """(1-based line number, its text or the RecordError saying why it cannot be read).

    Missing and empty files raise at once, before the first line is asked for.
    """
    path = _require_file(path)
    raw = path.read_bytes()
    start = len(_BOM) if raw.startswith(_BOM) else 0
    if start == len(raw):
        raise RecordError(path, None, None, "empty file")
    return _decode_each_line(path, raw, start, keep_endings)


def read_numbered_lines(path, *, skip_bad: bool = False, keep_endings: bool = False
                        ) -> tuple[list[tuple[int, str]], Skipped]:
    r"""The lines of a UTF-8 text file with their 1-based numbers, by the module's rules.

    Args:
      path: the file.
      skip_bad: skip (and count) lines that are not UTF-8 or hold stray control characters,
        instead of raising; the other lines keep their own numbers.
      keep_endings: keep each line's "\n" or "\r\n" (the last line may have none), so
        that joining the texts gives back the file's text without its byte-order mark.

    Returns:
      (lines, skipped): lines is a list of (line number, text), in file order; empty lines
      are kept.

    Raises:
      RecordError: for a missing or empty file, and naming the line (and column) of the
        first bad line unless `skip_bad`.
    """
    lines, skipped = [], Skipped()
    for number, text in _decoded_lines(path, keep_endings=keep_endings):
        if isinstance(text, RecordError):
            if not skip_bad:
                raise text
            skipped.errors.append(text)
        else:
            lines.append((number, text))
    return lines, skipped


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file, without their endings, by the module's rules.

    Line k of the file is element k - 1 (empty lines are kept).

    Raises:
      RecordError: for a missing or empty file, or naming the line of the first line that
        is not UTF-8 or holds a stray control character (`read_numbered_lines` can skip
        those instead).
    """
    lines, _ = read_numbered_lines(path)
    return [text for _, text in lines]


# A field parser turns the raw string into a value or raises ValueError with the problem.
FieldParser = Callable[[str], Any]


def parse_int(text: str) -> int:
    """An integer field (surrounding whitespace allowed)."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def parse_nonempty(text: str) -> str:
    """A string field that is not empty after stripping whitespace."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    return text


def _collect(parsed_rows, columns: Sequence[str], path, skip_bad: bool, skipped: Skipped):
    table = {name: [] for name in ("line", *columns)}
    for line_number, row in parsed_rows:
        if isinstance(row, RecordError):
            if not skip_bad:
                raise row
            skipped.errors.append(row)
            continue
        table["line"].append(line_number)
        for name in columns:
            table[name].append(row[name])
    return table


def read_tsv(path, fields: Mapping[str, FieldParser], *, skip_bad: bool = False,
             skip_header: bool = False, skip_blank: bool = True, delimiter: str = "\t"
             ) -> tuple[dict[str, list], Skipped]:
    """Reads a headerless tab-separated (or CSV) file whose columns are `fields`, in order.

    Args:
      path: the file.
      fields: column name -> parser, in column order; a row must have exactly that many
        tab-separated columns.
      skip_bad: skip (and count) malformed rows instead of raising.
      skip_header: ignore the first line.
      skip_blank: ignore lines that are empty or whitespace (they are never errors).
      delimiter: "\t" splits on tabs only (quotes are text, as in the seeds' corpora); any
        other delimiter, e.g. ",", is read with the `csv` module's quoting rules.

    Returns:
      (columns, skipped): columns maps each field name, plus "line" (1-based line numbers),
      to a list of the parsed values.

    Raises:
      RecordError: naming the file, line and field of the first malformed row.
    """
    path = _require_file(path)
    names = list(fields)
    separator = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))

    def parse(line_number: int, text: str):
        cells = (text.split("\t") if delimiter == "\t"
                 else next(csv.reader([text], delimiter=delimiter)))
        if len(cells) != len(names):
            return RecordError(path, line_number, None,
                               f"expected {len(names)} {separator}-separated columns "
                               f"({', '.join(names)}), found {len(cells)}")
        row = {}
        for name, cell in zip(names, cells):
            try:
                row[name] = fields[name](cell)
            except ValueError as error:
                return RecordError(path, line_number, name, str(error))
        return row

    rows = ((number, text if isinstance(text, RecordError) else parse(number, text))
            for number, text in _decoded_lines(path)
            if not (skip_header and number == 1)
            and not (skip_blank and isinstance(text, str) and not text.strip()))
    skipped = Skipped()
    return _collect(rows, names, path, skip_bad, skipped), skipped


def read_jsonl(path, fields: Mapping[str, FieldParser | None], *, skip_bad: bool = False
               ) -> tuple[dict[str, list], Skipped]:
    """Reads a JSON-lines file whose records must carry `fields`.

    Args:
      path: the file; blank lines are ignored.
      fields: required key -> parser applied to its value (None keeps the value as is).
      skip_bad: skip (and count) malformed records instead of raising.

    Returns:
      (columns, skipped) as in `read_tsv`.
    """
    path = _require_file(path)

    def parse(line_number: int, text: str):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            return RecordError(path, line_number, None, f"invalid JSON: {error.msg} "
                                                        f"(column {error.colno})")
        if not isinstance(record, dict):
            return RecordError(path, line_number, None, "a record must be a JSON object")
        row = {}
        for name, parser in fields.items():
            if name not in record:
                return RecordError(path, line_number, name, "missing")
            try:
                row[name] = record[name] if parser is None else parser(record[name])
            except (ValueError, TypeError) as error:
                return RecordError(path, line_number, name, str(error))
        return row

    rows = ((number, text if isinstance(text, RecordError) else parse(number, text))
            for number, text in _decoded_lines(path)
            if not isinstance(text, str) or text.strip())
    skipped = Skipped()
    return _collect(rows, list(fields), path, skip_bad, skipped), skipped


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_image_folder(folder, decode: Callable[[Any], np.ndarray], *, skip_bad: bool = False
                      ) -> tuple[np.ndarray, list[str], Skipped]:
    """Decodes every image under `folder` through `datasets`' imagefolder builder.

    Args:
      folder: a directory of image files (sub-directories allowed).
      decode: PIL image -> array (resize, crop, scale: the experiment decides).
      skip_bad: skip (and count) files that cannot be decoded instead of raising.

    Returns:
      (images stacked on axis 0, their paths, skipped).

    Raises:
      RecordError: for an empty or missing folder, or naming the file that cannot be decoded.
    """
    import datasets
    import PIL.Image

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise RecordError(folder, None, None, "no such directory")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*")):
        raise RecordError(folder, None, None,
                          f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    dataset = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train",
                                    keep_in_memory=True)
    # Decode ourselves, so that a broken file is reported by its path.
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    images, paths, skipped = [], [], Skipped()
    for item in dataset["image"]:
        path = item["path"]
        try:
            with PIL.Image.open(path) as image:
                images.append(decode(image))
        except (OSError, ValueError, SyntaxError) as error:
            problem = RecordError(path, None, None, f"cannot decode image: {error}")
            if not skip_bad:
                raise problem from error
            skipped.errors.append(problem)
            continue
        paths.append(path)
    if not images:
        raise RecordError(folder, None, None, "no decodable images")
    return np.stack(images), paths, skipped


class EpochBatches:
    """Shuffled fixed-size batches over in-memory arrays, resumable to the exact batch.

    Epoch e uses the permutation `np.random.default_rng([seed, e])`; the last partial batch
    of an epoch is dropped (its examples come back in later epochs' permutations). The
    position `{"epoch": e, "batch": b}` is what a checkpoint stores.

    Args:
      arrays: name -> array, all with the same leading dimension (the examples).
      batch_size: examples per batch (global, over all processes).
      seed: the shuffling seed.
      shuffle: False keeps file order (for evaluation).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int,
                 shuffle: bool = True):
        sizes = {name: len(array) for name, array in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"arrays have different numbers of examples: {sizes}")
        self.num_examples = next(iter(sizes.values()))
        if not 0 < batch_size <= self.num_examples:
            raise ValueError(f"batch_size {batch_size} must be in [1, {self.num_examples}] "
                             "(the number of examples)")
        self.arrays = dict(arrays)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.batches_per_epoch = self.num_examples // batch_size
        self.epoch, self.batch = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def state(self) -> dict[str, int]:
        """The position of the next batch: {"epoch": e, "batch": b}."""
        return {"epoch": self.epoch, "batch": self.batch}

    def restore(self, state: Mapping[str, int]) -> None:
        """Moves to a position returned by `state()`."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._order = self._permutation(self.epoch)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.batch == self.batches_per_epoch:
            self.restore({"epoch": self.epoch + 1, "batch": 0})
        rows = self._order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
        self.batch += 1
        return {name: array[rows] for name, array in self.arrays.items()}
