"""Frozen word vectors for the entity linker: word2vec text files, jieba words, gensim training.

    python -m experiments.entity_linking.word_vectors --out vectors.txt [TEXT_FILES ...] \\
        [--kb KB_DATA] [--dim 100] [--epochs 5]

trains skip-gram vectors with gensim on the KB's entity descriptions (`--kb`, else the real
CCKS2019 excerpt in ../shared when it is there, else the embedded KB) and on any UTF-8 text
files given, every line segmented with jieba, and writes them in the plain word2vec text
format (`experiments.word_vectors`, where the table, the file format and the training
live). The post (kexue.fm/archives/6919) uses the author's own Baidu-Baike word2vec; any
file in this format (e.g. a public Chinese word2vec) is read as data, never unpickled.

Segmentation keeps every character: the words of a text, joined, are the text, so each
character gets the vector of the word it lies in (`char_word_ids`).
"""

import argparse
import logging
import pathlib
import sys
from collections.abc import Iterable, Sequence

import jieba
import numpy as np

from experiments import data
from experiments.entity_linking import kb
from experiments.errors import UserError
from experiments.word_vectors import WordVectors, read_word2vec, train_skipgram, write_word2vec

__all__ = ["WordVectors", "char_word_ids", "kb_sentences", "read_word2vec", "segment",
           "train_word2vec", "write_word2vec"]

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


def train_word2vec(sentences: Sequence[str], *, dim: int = 100, epochs: int = 5,
                   window: int = 5, min_count: int = 1, seed: int = 0) -> WordVectors:
    """Skip-gram vectors (`experiments.word_vectors.train_skipgram`) of jieba's words of
    `sentences`, lower-cased; words made only of whitespace are left out (they are never
    looked up usefully)."""
    corpus = [[w for w in segment(kb.lower_same_length(s)) if w.strip()] for s in sentences]
    return train_skipgram(corpus, dim=dim, epochs=epochs, window=window,
                          min_count=min_count, seed=seed)


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
