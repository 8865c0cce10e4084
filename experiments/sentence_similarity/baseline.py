"""A training-free reference for the retrieval table: character n-gram TF-IDF cosines.

It tells how much of the open-set task (docs/sentence_similarity.md §5) plain character
overlap already solves on a corpus, so a trained encoder's figures can be read against it (on
the shared pair-derived groups most paraphrases share many characters).

    python -m experiments.sentence_similarity.baseline ../shared/data/sentence_similarity/groups.tsv
"""

import argparse
import collections
import json

import numpy as np
import scipy.sparse

from experiments.sentence_similarity import input_pipeline, retrieval


def char_ngrams(sentence: str, orders=(1, 2)) -> list[str]:
    """The sentence's character n-grams of each order, with repeats."""
    return [sentence[i:i + n] for n in orders for i in range(len(sentence) - n + 1)]


def tfidf_matrix(sentences: list[str], orders=(1, 2)) -> scipy.sparse.csr_matrix:
    """(n, terms) L2-normalised TF-IDF rows; idf = log(n / document frequency)."""
    vocabulary: dict[str, int] = {}
    rows, columns, values = [], [], []
    for row, sentence in enumerate(sentences):
        for term, count in collections.Counter(char_ngrams(sentence, orders)).items():
            rows.append(row)
            columns.append(vocabulary.setdefault(term, len(vocabulary)))
            values.append(count)
    counts = scipy.sparse.csr_matrix((np.asarray(values, np.float32), (rows, columns)),
                                     shape=(len(sentences), len(vocabulary)))
    document_frequency = np.bincount(columns, minlength=len(vocabulary))
    weighted = counts @ scipy.sparse.diags(np.log(len(sentences) / document_frequency))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()
    return scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted


def sparse_nearest_neighbours(matrix: scipy.sparse.csr_matrix, k: int, chunk_size: int = 512
                              ) -> np.ndarray:
    """(n, k) indices of each row's k most similar other rows by inner product, best first."""
    n = matrix.shape[0]
    transposed = matrix.T.tocsc()
    neighbours = np.empty((n, k), np.int64)
    for start in range(0, n, chunk_size):
        scores = (matrix[start:start + chunk_size] @ transposed).toarray()
        rows = np.arange(len(scores))
        scores[rows, start + rows] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        neighbours[start:start + chunk_size] = np.take_along_axis(top, order, axis=1)
    return neighbours


def tfidf_retrieval_metrics(sentences: list[str], labels: np.ndarray, ks=(1, 5, 10)
                            ) -> dict[str, float]:
    """Top-k and MAP@R (docs/sentence_similarity.md §5) with TF-IDF cosines as the similarity."""
    depth = retrieval.search_depth(labels, ks)
    neighbours = sparse_nearest_neighbours(tfidf_matrix(sentences), depth)
    return retrieval.metrics_from_neighbours(neighbours, labels, ks)


def held_out_tfidf_metrics(path, train_fraction: float) -> dict[str, float]:
    """`tfidf_retrieval_metrics` on the validation groups of the experiment's open-set split
    of a groups file (the sentences every trained model is scored on)."""
    groups, _ = input_pipeline.read_groups(path)
    valid = input_pipeline.split_by_group(groups, train_fraction).valid
    return tfidf_retrieval_metrics(valid.sentences, valid.group_ids)


def main(argv=None) -> None:
    from experiments.sentence_similarity import config as config_lib
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", help="group_id<TAB>sentence file")
    parser.add_argument("--train_fraction", type=float,
                        default=config_lib.get_config().data.train_fraction)
    args = parser.parse_args(argv)
    print(json.dumps(held_out_tfidf_metrics(args.groups, args.train_fraction)))


if __name__ == "__main__":
    main()
