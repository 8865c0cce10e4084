"""Frozen word vectors for the entity linker: word2vec text files, jieba words, gensim training.

    python -m experiments.entity_linking.word_vectors --out vectors.txt [TEXT_FILES ...] \\
        [--kb KB_DATA] [--dim 100] [--epochs 5]

trains skip-gram vectors with gensim on the KB's entity descriptions (`--kb`, else the real
CCKS2019 excerpt in ../shared when it is there, else the embedded KB) and on any UTF-8 text
files given, every line segmented with jieba, and writes them in the plain word2vec text
format: a first line "COUNT DIM", then "WORD V1 ... VDIM" per line. The post
(kexue.fm/archives/6919) uses the author's own Baidu-Baike word2vec; any file in this
format (e.g. a public Chinese word2vec) is read as data by `read_word2vec`, never unpickled.

Segmentation keeps every character: the words of a text, joined, are the text, so each
character gets the vector of the word it lies in (`char_word_ids`).
"""

import argparse
import dataclasses
import hashlib
import logging
import pathlib
import sys
import zlib
from collections.abc import Iterable, Sequence

import jieba
import numpy as np

from experiments import data
from experiments.entity_linking import kb
from experiments.errors import UserError

jieba.setLogLevel(logging.WARNING)


def segment(text: str) -> list[str]:
    """jieba's words of `text` (precise mode, HMM on), joining back to exactly `text`.

    Raises:
      ValueError: if the segmenter dropped or changed a character (offsets would shift).
    """
    words = jieba.lcut(text, HMM=True)
    if "".join(words) != text:
        raise ValueError(f"the segmenter changed the text {text!r}")
    return words


@dataclasses.dataclass(frozen=True)
class WordVectors:
    """A frozen word-vector table.

    Attributes:
      words: the vocabulary; word i has row i + 1.
      table: (len(words) + 1, W) float32; row 0 (unknown words) is zeros.
    """

    words: tuple[str, ...]
    table: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    @property
    def index(self) -> dict[str, int]:
        return self._index()

    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_cached_index")
        if cached is None:
            cached = {word: i + 1 for i, word in enumerate(self.words)}
            object.__setattr__(self, "_cached_index", cached)
        return cached

    def ids(self, words: Iterable[str]) -> list[int]:
        """Row of each word (0 for unknown)."""
        index = self._index()
        return [index.get(word, 0) for word in words]

    def digest(self) -> str:
        """A short hash of the words and the table (for checkpoint fingerprints)."""
        digest = hashlib.sha256("\n".join(self.words).encode())
        digest.update(np.ascontiguousarray(self.table).tobytes())
        return digest.hexdigest()[:16]


def char_word_ids(text: str, vectors: WordVectors, maxlen: int) -> np.ndarray:
    """(maxlen,) int32: each character's word row in `vectors` (0 past the text or unknown).

    `text` is segmented whole (`segment`), then cut to `maxlen` characters.
    """
    ids = np.zeros(maxlen, np.int32)
    position = 0
    for word, row in zip(words := segment(text), vectors.ids(words)):
        end = min(position + len(word), maxlen)
        ids[position:end] = row
        position += len(word)
        if position >= maxlen:
            break
    return ids


def read_word2vec(path) -> WordVectors:
    """Reads the word2vec text format ("COUNT DIM" header, then "WORD V1 ... VDIM" lines).

    Raises:
      experiments.data.RecordError: naming the file and line of a bad header, a row with the
        wrong number of values, a value that is not a finite number, or a repeated word.
    """
    lines, _ = data.read_numbered_lines(path)
    lines = [(number, text) for number, text in lines if text.strip()]
    if not lines:
        raise data.RecordError(path, None, None, "no vectors")
    number, header = lines[0]
    parts = header.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise data.RecordError(path, number, "header", f"expected 'COUNT DIM', got {header!r}")
    count, dim = int(parts[0]), int(parts[1])
    if dim < 1:
        raise data.RecordError(path, number, "header", f"dimension {dim} must be >= 1")
    words, rows, seen = [], [], {}
    for number, text in lines[1:]:
        parts = text.rstrip().split(" ")
        word, values = parts[0], parts[1:]
        if len(values) != dim:
            raise data.RecordError(path, number, "vector",
                                   f"{len(values)} values for {word!r}, the header says {dim}")
        try:
            row = np.asarray([float(v) for v in values], np.float32)
        except ValueError:
            raise data.RecordError(path, number, "vector", f"a value of {word!r} is not a "
                                                           "number") from None
        if not np.all(np.isfinite(row)):
            raise data.RecordError(path, number, "vector", f"{word!r} has a non-finite value")
        if word in seen:
            raise data.RecordError(path, number, "word", f"{word!r} repeats line {seen[word]}")
        seen[word] = number
        words.append(word)
        rows.append(row)
    if len(words) != count:
        raise data.RecordError(path, lines[0][0], "header",
                               f"says {count} words, the file has {len(words)}")
    table = np.concatenate([np.zeros((1, dim), np.float32), np.stack(rows)])
    return WordVectors(tuple(words), table)


def write_word2vec(vectors: WordVectors, path) -> None:
    """Writes `vectors` in the word2vec text format (row 0, the unknown word, left out)."""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(f"{len(vectors.words)} {vectors.dim}\n")
        for word, row in zip(vectors.words, vectors.table[1:]):
            stream.write(word + " " + " ".join(f"{v:.6g}" for v in row) + "\n")


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hash(word + seed); Python's str hash
    # changes per process, so a stable one makes training reproducible.
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: Sequence[str], *, dim: int = 100, epochs: int = 5,
                   window: int = 5, min_count: int = 1, seed: int = 0) -> WordVectors:
    """Skip-gram vectors (gensim, one worker: reproducible) over jieba-segmented sentences.

    Words made only of whitespace are left out (they are never looked up usefully).
    """
    from gensim.models import Word2Vec  # imported on use: gensim takes a second to load

    corpus = [[w for w in segment(kb.lower_same_length(s)) if w.strip()] for s in sentences]
    corpus = [words for words in corpus if words]
    if not corpus:
        raise UserError("no text to train word vectors on")
    model = Word2Vec(corpus, vector_size=dim, window=window, min_count=min_count, sg=1,
                     workers=1, epochs=epochs, seed=seed, hashfxn=_stable_hash)
    words = tuple(model.wv.index_to_key)
    table = np.concatenate([np.zeros((1, dim), np.float32),
                            np.asarray(model.wv.vectors, np.float32)])
    return WordVectors(words, table)


def kb_sentences(entities: Iterable[kb.Entity]) -> list[str]:
    """The lines of every entity's description (`kb.describe`), the training text."""
    return [line for entity in entities for line in kb.describe(entity).split("\n") if line]


def main(argv=None) -> None:
    from experiments.entity_linking import generate, stats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the vectors file")
    parser.add_argument("texts", nargs="*", type=pathlib.Path, help="more UTF-8 text files")
    parser.add_argument("--kb", type=pathlib.Path, help="kb_data file (JSON lines)")
    parser.add_argument("--dim", type=int, default=100, help="vector size (default 100)")
    parser.add_argument("--epochs", type=int, default=5, help="passes (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.kb:
            entities, source = kb.read_kb(args.kb)[0], str(args.kb)
        elif stats.SHARED_KB.exists():
            entities, source = kb.read_kb(stats.SHARED_KB)[0], str(stats.SHARED_KB)
        else:
            entities, source = list(generate.EMBEDDED_KB), "the embedded KB"
        sentences = kb_sentences(entities)
        for path in args.texts:
            sentences += [line for line in data.read_lines(path) if line.strip()]
        vectors = train_word2vec(sentences, dim=args.dim, epochs=args.epochs, seed=args.seed)
    except UserError as error:
        sys.exit(f"error: {error}")
    write_word2vec(vectors, args.out)
    print(f"{len(vectors.words)} words × {vectors.dim} from {source} descriptions and "
          f"{len(args.texts)} text file(s) → {args.out}")


if __name__ == "__main__":
    main()
