"""Title/text pairs → the post's character ids, and the generated demo corpus.

File format: UTF-8 TSV without header, `title<TAB>text` per line (the LCSTS and CSL files of
CLUEbenchmark/CLGE). Ids (docs/headlines.md §3): 0 pad, 1 unknown, 2 `<start>`, 3 `<end>`,
then the characters seen at least ``min_count`` times over texts and titles, most frequent
first. A text is cut to ``max_text_len`` characters; a title to ``max_title_len`` and
encoded as [2] + ids + [3] for the L2R decoder and as the exact reversal, [3] + reversed ids
+ [2], for the R2L one.
"""

import collections
import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from experiments import data

PAD, UNK, START, END = 0, 1, 2, 3
FIRST_CHAR_ID = 4


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Titles and texts read from a file (whitespace-stripped)."""

    titles: list[str]
    texts: list[str]
    path: str

    def __len__(self) -> int:
        return len(self.titles)

    def take(self, index: Sequence[int]) -> "Pairs":
        return Pairs([self.titles[i] for i in index], [self.texts[i] for i in index],
                     self.path)


def read_pairs(path, *, skip_bad: bool = False) -> tuple[Pairs, data.Skipped]:
    """Reads a `title<TAB>text` file.

    Raises:
      experiments.data.RecordError: naming the file, line and field of a row without exactly
        one tab or with an empty title or text (unless ``skip_bad``).
    """
    columns, skipped = data.read_tsv(
        path, {"title": data.parse_nonempty, "text": data.parse_nonempty},
        skip_bad=skip_bad)
    return Pairs(columns["title"], columns["text"], str(path)), skipped


def read_texts(path) -> list[str]:
    """One text per non-blank line (`mode=generate`)."""
    texts = [line.strip() for line in data.read_lines(path) if line.strip()]
    if not texts:
        raise data.RecordError(path, None, None, "no texts (one per line expected)")
    return texts


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Character → id; 0 pad, 1 unknown, 2 start, 3 end, characters from 4."""

    chars: tuple[str, ...]

    @classmethod
    def build(cls, strings: Iterable[str], min_count: int) -> "Vocabulary":
        """Characters seen at least ``min_count`` times, most frequent first (ties by char)."""
        counts = collections.Counter(char for string in strings for char in string)
        kept = sorted((c for c, n in counts.items() if n >= min_count),
                      key=lambda c: (-counts[c], c))
        return cls(tuple(kept))

    @property
    def size(self) -> int:
        return len(self.chars) + FIRST_CHAR_ID

    def ids(self, string: str) -> list[int]:
        index = self._index()
        return [index.get(char, UNK) for char in string]

    def _index(self) -> dict[str, int]:
        if not hasattr(self, "_cached_index"):
            object.__setattr__(self, "_cached_index",
                               {c: i + FIRST_CHAR_ID for i, c in enumerate(self.chars)})
        return self._cached_index

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → text; special ids are dropped, unknown shows as "□"."""
        out = []
        for i in ids:
            i = int(i)
            if i >= FIRST_CHAR_ID:
                out.append(self.chars[i - FIRST_CHAR_ID])
            elif i == UNK:
                out.append("□")
        return "".join(out)

    def to_json(self) -> str:
        return json.dumps({"chars": "".join(self.chars)}, ensure_ascii=False) + "\n"

    def digest(self) -> str:
        return hashlib.sha256("".join(self.chars).encode("utf-8")).hexdigest()[:16]

    @classmethod
    def load(cls, path) -> "Vocabulary":
        return cls(tuple(json.loads(pathlib.Path(path).read_text(encoding="utf-8"))["chars"]))


def encode_texts(vocab: Vocabulary, texts: Sequence[str], max_len: int) -> np.ndarray:
    """(n, max_len) int32 text ids, cut then right-padded with 0."""
    ids = np.zeros((len(texts), max_len), np.int32)
    for row, text in enumerate(texts):
        codes = vocab.ids(text[:max_len])
        ids[row, :len(codes)] = codes
    return ids


def encode_titles(vocab: Vocabulary, titles: Sequence[str], max_title_len: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The L2R and R2L decoder sequences, each (n, max_title_len + 2) int32.

    L2R: [START] + ids(title[:max_title_len]) + [END]; R2L: its exact reversal. 0-padded.
    """
    width = max_title_len + 2
    l2r = np.zeros((len(titles), width), np.int32)
    r2l = np.zeros((len(titles), width), np.int32)
    for row, title in enumerate(titles):
        codes = [START] + vocab.ids(title[:max_title_len]) + [END]
        l2r[row, :len(codes)] = codes
        r2l[row, :len(codes)] = codes[::-1]
    return l2r, r2l


def split_off(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """A seeded random (1 − fraction, fraction) split of ``pairs``: (train, held out)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    cut = len(pairs) - max(1, int(round(fraction * len(pairs))))
    return pairs.take(order[:cut].tolist()), pairs.take(order[cut:].tolist())


# ------------------------------------------------------------------------------------------
# The generated demo corpus.

# A fixed alphabet of common characters: the texts are random strings of it.
ALPHABET = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
            "同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自"
            "二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日")
MARK_OPEN, MARK_CLOSE = "【", "】"


def generated_pairs(count: int, seed: int, *, text_len: int = 28, title_len: tuple = (3, 8)
                    ) -> Pairs:
    """Generated title/text pairs whose title is recoverable from the text by a rule.

    Each text is ``text_len`` random characters of `ALPHABET` with one span of 3–7 of them
    wrapped in 【】 at a random place; the title is that span followed by its own first
    character: e.g. text "…是在【中国大】有…" → title "中国大中". The decoders must learn to
    locate the span, copy it in order and end the title by repeating its first character,
    a dependency between the two ends of the title.

    Args:
      count: pairs to generate.
      seed: the generator's seed.
      text_len: random characters per text (the brackets come on top).
      title_len: (low, high) inclusive bounds of the bracketed span's length.

    Returns:
      `Pairs` with path "<generated>".
    """
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(ALPHABET))
    titles, texts = [], []
    for _ in range(count):
        chars = list(rng.choice(alphabet, text_len))
        span = int(rng.integers(title_len[0], title_len[1]))
        begin = int(rng.integers(0, text_len - span + 1))
        title = chars[begin:begin + span]
        text = chars[:begin] + [MARK_OPEN] + title + [MARK_CLOSE] + chars[begin + span:]
        titles.append("".join(title + title[:1]))
        texts.append("".join(text))
    return Pairs(titles, texts, "<generated>")
