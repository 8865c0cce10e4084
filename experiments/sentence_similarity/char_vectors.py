"""Character vectors from unlabelled text, to start the encoder's embedding from.

    python -m experiments.sentence_similarity.char_vectors --out runs/char_vectors.txt \\
        ../shared/data/headline_generation/LCSTS_PART_II_via_CLGE/train.tsv [--dim 128]

trains skip-gram vectors (`experiments.word_vectors.train_skipgram`) whose tokens are the
characters of each line, normalised as the encoder reads them (half-width, lower case;
whitespace dropped), and writes them in the word2vec text format. Training with
`--config.model.embedding_init=FILE` starts every vocabulary character the file has from its
vector instead of the seed's U(−0.05, 0.05) (docs/sentence_similarity.md §9); a departure
from the seed, which learns its embedding from the paraphrase groups alone.

The text should not hold the held-out sentences: vectors learnt from them would carry
information about the very groups the retrieval figures are measured on.
"""

import argparse
import pathlib
import sys
from collections.abc import Iterable

import numpy as np

from experiments import data
from experiments.errors import UserError
from experiments.sentence_similarity import input_pipeline
from experiments.word_vectors import WordVectors, read_word2vec, train_skipgram, write_word2vec


def character_corpus(lines: Iterable[str]) -> list[list[str]]:
    """Each line's characters as the encoder reads them (`input_pipeline.normalize`),
    whitespace dropped."""
    return [[char for char in input_pipeline.normalize(line) if not char.isspace()]
            for line in lines]


def train_char_vectors(lines: Iterable[str], *, dim: int, epochs: int = 5, window: int = 5,
                       min_count: int = 1, seed: int = 0) -> WordVectors:
    """Skip-gram vectors [count, dim] of the characters of `lines` (`character_corpus`)."""
    return train_skipgram(character_corpus(lines), dim=dim, epochs=epochs, window=window,
                          min_count=min_count, seed=seed)


def embedding_rows(vocab: input_pipeline.Vocabulary, vectors: WordVectors, width: int,
                   std: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The embedding rows to start from `vectors`: those of the characters they know.

    The pad (0) and unknown (1) rows and the characters `vectors` lacks keep their random
    initialisation (`train.make_init_state`).

    Args:
      vocab: the run's vocabulary (character i has id i + 2).
      vectors: character vectors.
      width: the embedding's width D, which the vectors must have.
      std: > 0 rescales the chosen vectors so that their standard deviation (over all their
        values) is `std`; 0 keeps the file's scale.

    Returns:
      (ids [N] int32, rows [N, D] float32), N the vocabulary characters `vectors` has.

    Raises:
      ValueError: if the vectors are not `width` wide.
    """
    if vectors.dim != width:
        raise ValueError(f"the vectors are {vectors.dim} wide, the embedding {width}")
    index = vectors.index
    pairs = [(i + 2, index[char]) for i, char in enumerate(vocab.chars) if char in index]
    ids = np.asarray([i for i, _ in pairs], np.int32)
    rows = vectors.table[np.asarray([r for _, r in pairs], np.int64)].astype(np.float32)
    if std > 0 and len(rows):
        rows = rows * np.float32(std / max(float(rows.std()), 1e-12))
    return ids, rows.reshape(len(pairs), width)


def load_embedding_rows(path, vocab: input_pipeline.Vocabulary, width: int, std: float
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """`embedding_rows` from a word2vec text file, and a line saying what they cover.

    Raises:
      experiments.data.RecordError: a malformed vectors file (names file and line).
      UserError: vectors of another width than the embedding, naming the file.
    """
    vectors = read_word2vec(path)
    try:
        ids, rows = embedding_rows(vocab, vectors, width, std)
    except ValueError as error:
        raise UserError(f"{path}: {error} (model.embed_dim); train vectors with "
                        f"--dim {width}") from None
    scale = f"rescaled to std {std:g}" if std > 0 else "at the file's scale"
    return ids, rows, (f"embedding: {len(ids)} of the {len(vocab.chars)} vocabulary "
                       f"characters start from {path} ({scale}), the rest from "
                       "U(−0.05, 0.05)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="+", type=pathlib.Path, help="UTF-8 text files")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the vectors file")
    parser.add_argument("--dim", type=int, default=128,
                        help="vector size: the encoder's model.embed_dim (default 128)")
    parser.add_argument("--epochs", type=int, default=5, help="passes (default 5)")
    parser.add_argument("--window", type=int, default=5, help="context width (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        lines = [line for path in args.texts for line in data.read_lines(path)]
        vectors = train_char_vectors(lines, dim=args.dim, epochs=args.epochs,
                                     window=args.window, seed=args.seed)
    except UserError as error:
        sys.exit(f"error: {error}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_word2vec(vectors, args.out)
    print(f"{len(vectors.words)} characters × {vectors.dim} from {len(lines)} lines of "
          f"{len(args.texts)} file(s) → {args.out}")


if __name__ == "__main__":
    main()
