"""Paraphrase groups → character ids, the open-set split, and the pair-file converter.

File format (docs/sentence_similarity.md §4, the seed's `tongyiju.csv`): UTF-8, no header,
`group_id<TAB>sentence` per line; sentences sharing a group id are paraphrases. Preprocessing
follows the seed (same section): full-width → half-width, lower case, characters as tokens, a
vocabulary of the characters seen at least `min_count` times in the whole file (ids 0 = pad,
1 = unknown), truncation and right padding to `maxlen`. The split is open-set by group:
groups whose id is below the cut train the classifier, the rest are never seen in training
and are only retrieved among themselves.
"""

import collections
import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from experiments import data

PAD, UNK = 0, 1


def to_half_width(text: str) -> str:
    """U+3000 → space and U+FF01..U+FF5E → U+0021..U+007E (docs/sentence_similarity.md §4)."""
    chars = []
    for char in text:
        code = ord(char)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        chars.append(chr(code))
    return "".join(chars)


def normalize(text: str) -> str:
    """The seed's preprocessing of one sentence: half-width, then lower case."""
    return to_half_width(text).lower()


@dataclasses.dataclass(frozen=True)
class Groups:
    """Sentences with their paraphrase-group ids and source lines."""

    group_ids: np.ndarray      # (n,) int64
    sentences: list[str]       # normalised
    lines: np.ndarray          # (n,) 1-based line numbers in `path`
    path: str

    def __len__(self) -> int:
        return len(self.sentences)

    def select(self, mask: np.ndarray) -> "Groups":
        index = np.flatnonzero(mask)
        return Groups(self.group_ids[index], [self.sentences[i] for i in index],
                      self.lines[index], self.path)


def read_groups(path, *, skip_bad: bool = False) -> tuple[Groups, data.Skipped]:
    """Reads a `group_id<TAB>sentence` file.

    Raises:
      experiments.data.RecordError: naming the file and line of a row without a tab, an empty
        sentence or a non-integer group id (unless `skip_bad`, which counts and skips them).
    """
    columns, skipped = data.read_tsv(
        path, {"group_id": data.parse_int, "sentence": data.parse_nonempty},
        skip_bad=skip_bad)
    groups = Groups(group_ids=np.asarray(columns["group_id"], np.int64),
                    sentences=[normalize(s) for s in columns["sentence"]],
                    lines=np.asarray(columns["line"], np.int64), path=str(path))
    return groups, skipped


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Character → id; 0 is padding, 1 unknown (docs/sentence_similarity.md §4)."""

    chars: tuple[str, ...]     # chars[i] has id i + 2

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int) -> "Vocabulary":
        """Characters seen at least `min_count` times, most frequent first (ties by char)."""
        counts = collections.Counter(char for sentence in sentences for char in sentence)
        kept = sorted((c for c, n in counts.items() if n >= min_count),
                      key=lambda c: (-counts[c], c))
        return cls(tuple(kept))

    @property
    def size(self) -> int:
        """Embedding rows: the characters plus pad and unknown."""
        return len(self.chars) + 2

    def encode(self, sentences: Sequence[str], maxlen: int) -> np.ndarray:
        """(len(sentences), maxlen) int32 ids, truncated then right-padded with 0."""
        index = {char: i + 2 for i, char in enumerate(self.chars)}
        ids = np.zeros((len(sentences), maxlen), np.int32)
        for row, sentence in enumerate(sentences):
            codes = [index.get(char, UNK) for char in sentence[:maxlen]]
            ids[row, :len(codes)] = codes
        return ids

    def to_json(self) -> str:
        """The vocabulary as one JSON line ({"chars": "..."}), as `save` writes it."""
        return json.dumps({"chars": "".join(self.chars)}, ensure_ascii=False) + "\n"

    def digest(self) -> str:
        """A short SHA-256 of the characters in id order (a checkpoint fingerprint)."""
        return hashlib.sha256("".join(self.chars).encode("utf-8")).hexdigest()[:16]

    def save(self, path) -> None:
        pathlib.Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path) -> "Vocabulary":
        return cls(tuple(json.loads(pathlib.Path(path).read_text(encoding="utf-8"))["chars"]))


def unknown_characters(token_ids: np.ndarray) -> dict[str, float]:
    """How much of some encoded text the vocabulary does not know (the unknown id 1).

    Counted on what the encoder reads: the characters kept by `Vocabulary.encode`, after
    truncation to maxlen, padding (id 0) excluded.

    Args:
      token_ids: (n, T) int ids from `Vocabulary.encode`.

    Returns:
      {"characters": real characters, "unknown_characters": those with id 1,
       "unknown_share": their share (0.0 without characters), "sentences": n,
       "sentences_with_unknown": rows with at least one, "sentences_with_unknown_share"}.
    """
    token_ids = np.asarray(token_ids)
    characters = int(np.sum(token_ids != PAD))
    unknown = token_ids == UNK                                  # [n, T]
    count = int(np.sum(unknown))
    rows = int(np.sum(unknown.any(axis=1)))
    sentences = int(token_ids.shape[0])
    return {"characters": characters, "unknown_characters": count,
            "unknown_share": count / characters if characters else 0.0,
            "sentences": sentences, "sentences_with_unknown": rows,
            "sentences_with_unknown_share": rows / sentences if sentences else 0.0}


def describe_unknown(report: Mapping[str, float]) -> str:
    """One log line from an `unknown_characters` report."""
    return (f"unknown characters: {report['unknown_characters']} of {report['characters']} "
            f"({report['unknown_share']:.2%}); sentences with one or more: "
            f"{report['sentences_with_unknown']} of {report['sentences']} "
            f"({report['sentences_with_unknown_share']:.2%})")


@dataclasses.dataclass(frozen=True)
class OpenSetSplit:
    """Training groups (as contiguous class ids) and unseen validation groups."""

    train: Groups
    train_labels: np.ndarray   # (n_train,) class ids in [0, num_classes)
    num_classes: int
    valid: Groups
    cut: int                   # groups with id < cut train, the rest validate


def split_by_group(groups: Groups, train_fraction: float) -> OpenSetSplit:
    """Open-set split by group id (docs/sentence_similarity.md §4: the seed trains ids < 90,000).

    The cut is the group id below which `train_fraction` of the distinct groups lie, so a
    file with ids 0..N-1 splits like the seed's `id < 0.9·N`.
    """
    distinct = np.unique(groups.group_ids)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    position = int(round(train_fraction * len(distinct)))
    if position in (0, len(distinct)):
        raise ValueError(f"{groups.path}: {len(distinct)} groups are too few to split "
                         f"{train_fraction:.0%} / {1 - train_fraction:.0%}")
    cut = int(distinct[position])
    is_train = groups.group_ids < cut
    train = groups.select(is_train)
    train_classes, train_labels = np.unique(train.group_ids, return_inverse=True)
    return OpenSetSplit(train=train, train_labels=train_labels.astype(np.int32),
                        num_classes=len(train_classes), valid=groups.select(~is_train), cut=cut)


def group_size_report(groups: Groups) -> dict[str, int]:
    """Counts for the log: sentences, groups, and singleton groups (never a retrieval hit)."""
    _, sizes = np.unique(groups.group_ids, return_counts=True)
    return {"sentences": len(groups), "groups": len(sizes),
            "singleton_groups": int(np.sum(sizes == 1))}


# --------------------------------------------------------------------------------------
# Labelled pairs (LCQMC / BQ / AFQMC style) → groups, by connected components.


def pairs_to_groups(pairs: Iterable[tuple[str, str, bool]]) -> list[list[str]]:
    """Connected components of the graph whose edges are the positive pairs.

    Args:
      pairs: (sentence_a, sentence_b, is_paraphrase) triples; negatives are ignored.

    Returns:
      The groups (size ≥ 2), each sorted, ordered by their smallest sentence.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, positive in pairs:
        if positive and a != b:
            root_a, root_b = find(a), find(b)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    members = collections.defaultdict(list)
    for sentence in parent:
        members[find(sentence)].append(sentence)
    return sorted((sorted(group) for group in members.values() if len(group) >= 2),
                  key=lambda group: group[0])


def read_pair_file(path, *, label_column: int = -1, first_column: int = 0,
                   positive: Mapping[str, bool] | None = None, skip_header: bool = False,
                   skip_bad: bool = False) -> tuple[list[tuple[str, str, bool]], data.Skipped]:
    """Reads a tab-separated pair file `s1<TAB>s2<TAB>label` (columns configurable).

    Args:
      path: the file.
      label_column: index of the label column (default: last).
      first_column: index of the first sentence; the second follows it.
      positive: label text → is paraphrase (default: "1" positive, "0" negative; scores like
        "5" or "5.0" of STS files can be mapped here).
      skip_header: ignore the first line.
      skip_bad: skip and count malformed rows instead of raising.
    """
    positive = positive or {"1": True, "0": False}
    lines = data.read_lines(path)
    pairs, skipped = [], data.Skipped()
    for number, text in enumerate(lines, start=1):
        if (skip_header and number == 1) or not text.strip():
            continue
        cells = text.split("\t")
        try:
            a, b = cells[first_column].strip(), cells[first_column + 1].strip()
            label = cells[label_column].strip()
        except IndexError:
            error = data.RecordError(path, number, None,
                                     f"expected at least {first_column + 3} tab-separated "
                                     f"columns, found {len(cells)}")
        else:
            if label in positive and a and b:
                pairs.append((a, b, positive[label]))
                continue
            field = "label" if label not in positive else "sentence"
            error = data.RecordError(path, number, field,
                                     f"unknown label {label!r} (known: {sorted(positive)})"
                                     if field == "label" else "empty sentence")
        if not skip_bad:
            raise error
        skipped.errors.append(error)
    return pairs, skipped


def write_groups(groups: Sequence[Sequence[str]], path) -> None:
    """Writes groups as `group_id<TAB>sentence` lines, ids 0.. in order."""
    with open(path, "w", encoding="utf-8") as stream:
        for group_id, group in enumerate(groups):
            for sentence in group:
                stream.write(f"{group_id}\t{sentence}\n")
