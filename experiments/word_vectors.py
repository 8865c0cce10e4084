"""Word vectors shared by the experiments: the word2vec text format and skip-gram training.

The plain word2vec text format is a first line "COUNT DIM", then "WORD V1 ... VDIM" per
line. Any file in this format (e.g. a public Chinese word2vec) is read as data by
`read_word2vec`, never unpickled. `train_skipgram` trains skip-gram vectors (Mikolov et al.
2013, arXiv 1310.4546) with gensim on tokens the caller chose: the entity linker's jieba
words (`experiments.entity_linking.word_vectors`), the sentence encoder's characters
(`experiments.sentence_similarity.char_vectors`).
"""

import dataclasses
import hashlib
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from experiments import data
from experiments.errors import UserError


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


def train_skipgram(corpus: Sequence[Sequence[str]], *, dim: int = 100, epochs: int = 5,
                   window: int = 5, min_count: int = 1, seed: int = 0) -> WordVectors:
    """Skip-gram vectors (gensim, one worker: reproducible) of the tokens of `corpus`.

    Args:
      corpus: sentences, each a sequence of tokens (empty sentences are left out).
      dim, epochs, window, min_count, seed: gensim's vector_size, epochs, window,
        min_count and seed.

    Returns:
      the vectors, most frequent token first; row 0 (unknown) is zeros.

    Raises:
      UserError: if the corpus has no token.
    """
    from gensim.models import Word2Vec  # imported on use: gensim takes a second to load

    corpus = [list(tokens) for tokens in corpus if len(tokens)]
    if not corpus:
        raise UserError("no text to train word vectors on")
    model = Word2Vec(corpus, vector_size=dim, window=window, min_count=min_count, sg=1,
                     workers=1, epochs=epochs, seed=seed, hashfxn=_stable_hash)
    words = tuple(model.wv.index_to_key)
    table = np.concatenate([np.zeros((1, dim), np.float32),
                            np.asarray(model.wv.vectors, np.float32)])
    return WordVectors(words, table)
