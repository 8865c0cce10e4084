r"""Character-level text for the sparse-attention LM: reading, vocabulary, split, windows.

* Text: any UTF-8 file, read whole through `experiments.data`'s line decoder, the one every
  text reader shares (its module docstring states the rules: a leading BOM is dropped, a
  bad byte or a stray control character such as a lone "\r" is an error naming the line).
  Line endings, "\n" or "\r\n", are kept as they are: they are characters the model
  predicts. The embedded default, for a fresh machine, is the Python standard library's own
  source (`stdlib_text`).
* Split: contiguous, the first 90% of the characters train and the last 10% validate (no
  shuffling of lines or chunks, so no validation text leaks into training windows).
* Vocabulary: the characters of the training split, sorted by code point, as ids 1 … V−1;
  id 0 is "unknown", used for characters that occur only in the validation split.
* Training batches: windows of context + 1 consecutive characters (inputs are the first
  context, targets the last context) starting at uniformly random positions: an
  `EpochBatches` permutation over every possible start index, so a batch is a pure function
  of (seed, epoch, position) and the position is checkpointed with the model.
* Validation: non-overlapping windows tiling the validation split (window k covers
  characters k·C … k·C + C, C = context), so each character is predicted at most once; see
  `validation_windows`.
"""

import dataclasses
import pathlib
import sysconfig
from collections.abc import Mapping

import numpy as np

from experiments import data

UNKNOWN_ID = 0


def read_text(path) -> str:
    """The whole text of a UTF-8 file, without a leading BOM, line endings kept.

    Raises:
      RecordError: naming the file for a missing, empty or blank file, and the file and
        line for bytes that are not UTF-8 or a stray control character (see
        `experiments.data`).
    """
    lines, _ = data.read_numbered_lines(path, keep_endings=True)
    text = "".join(line for _, line in lines)
    if not text.strip():
        raise data.RecordError(path, None, None, "the file has no text")
    return text


def stdlib_files() -> list[pathlib.Path]:
    """The top-level modules of this interpreter's standard library, sorted by name."""
    return sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def stdlib_text(max_chars: int) -> str:
    """The embedded default corpus: the standard library's own Python source.

    The top-level `*.py` files of `sysconfig.get_paths()["stdlib"]` (not the packages or
    the test suite), in sorted file-name order, concatenated and cut at ``max_chars``
    characters. Deterministic for a given Python version (3.11.7: 168 files, about 4.7 MB
    before the cut); other versions give a slightly different text.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces, total = [], 0
    for path in stdlib_files():
        pieces.append(path.read_text(encoding="utf-8"))
        total += len(pieces[-1])
        if total >= max_chars:
            break
    if not pieces:
        raise data.RecordError(sysconfig.get_paths()["stdlib"], None, None,
                               "no *.py files in the standard library directory")
    return "".join(pieces)[:max_chars]


@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """Characters ↔ ids; id 0 is the unknown character, 1 … are `chars` in order."""

    chars: str

    @classmethod
    def build(cls, text: str) -> "CharVocabulary":
        """The distinct characters of `text`, sorted by code point."""
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        """V: the characters plus the unknown id."""
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """(len(text),) int32 ids; characters not in the vocabulary map to `UNKNOWN_ID`."""
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)  # sorted
        position = np.searchsorted(table, codes)
        known = (position < len(table)) & (table[np.minimum(position, len(table) - 1)] == codes)
        return np.where(known, position + 1, UNKNOWN_ID).astype(np.int32)

    def decode(self, ids) -> str:
        """The text of ids; the unknown id becomes U+FFFD."""
        return "".join("\ufffd" if i == UNKNOWN_ID else self.chars[i - 1] for i in ids)


def split_text(text: str, valid_fraction: float) -> tuple[str, str]:
    """Contiguous split: (the first 1 − f of the characters, the last f)."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    cut = int(round(len(text) * (1.0 - valid_fraction)))
    return text[:cut], text[cut:]


class WindowBatches:
    """Random training windows of ``context + 1`` consecutive ids, resumable.

    Each batch is {"tokens": int32 [batch_size, context + 1]}. The start indices come from
    an `EpochBatches` over all ``len(ids) − context`` starts: an epoch visits every start once
    in the order of `np.random.default_rng([seed, epoch])`, and `state()` / `restore()` are
    the position the trainer checkpoints.
    """

    def __init__(self, ids: np.ndarray, context: int, batch_size: int, seed: int):
        num_starts = len(ids) - context
        if num_starts < batch_size:
            raise ValueError(
                f"the training text has {len(ids)} characters: too short for {batch_size} "
                f"windows of context {context} + 1")
        self.ids, self.context = ids, context
        self._starts = data.EpochBatches({"start": np.arange(num_starts)}, batch_size, seed)

    def state(self) -> dict[str, int]:
        """The position of the next batch (see `EpochBatches.state`)."""
        return self._starts.state()

    def restore(self, state: Mapping[str, int]) -> None:
        """Moves to a position returned by `state()`."""
        self._starts.restore(state)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        starts = next(self._starts)["start"]
        offsets = np.arange(self.context + 1)
        return {"tokens": self.ids[starts[:, None] + offsets[None, :]]}


def validation_windows(ids: np.ndarray, context: int, max_windows: int = 0) -> np.ndarray:
    """Non-overlapping evaluation windows, each character predicted at most once.

    Window k is ids[k·C : k·C + C + 1] (C = context): its C targets are characters
    k·C + 1 … k·C + C, so the windows tile the split and no character is counted twice
    (the first character of the split is never a target; the last partial window is left
    out). Each window's first targets see a short context, as in any non-overlapping
    evaluation.

    Args:
      ids: (M,) int32 validation ids.
      context: C.
      max_windows: keep at most this many windows, evenly spaced over the split (0: all).

    Returns:
      int32 [num_windows, C + 1].

    Raises:
      ValueError: if the split is shorter than one window.
    """
    count = (len(ids) - 1) // context
    if count < 1:
        raise ValueError(f"the validation text has {len(ids)} characters, fewer than one "
                         f"window of context {context} + 1")
    chosen = np.arange(count)
    if 0 < max_windows < count:
        chosen = np.unique(np.round(np.linspace(0, count - 1, max_windows)).astype(int))
    offsets = np.arange(context + 1)
    return ids[chosen[:, None] * context + offsets[None, :]]
