"""Open-set retrieval metrics: exact brute-force top-k on device, top-k accuracy, MAP@R.

The protocol is docs/sentence_similarity.md §5: every validation sentence queries all the
others (itself excluded), and a query is a top-k hit when one of its k nearest neighbours by
cosine shares its group. The seed assumed rank 1 was the query itself and looked at ranks
2..k+1; excluding the query's own index is the same thing without the assumption (duplicated
sentences in two groups would break it). MAP@R (Musgrave et al., "A Metric Learning Reality
Check", 2020) adds a ranking-quality figure: for a query with R other members of its group,
the mean over the first R ranks of precision@i at the ranks that are hits, divided by R.

A query whose group has no other member (R = 0) has nothing to find: it counts as a miss in
top-k (as in the seed) and is left out of MAP@R, the mean over the queries with R ≥ 1. When
no query has R ≥ 1 neither figure means anything, and `NothingToRetrieve` is raised rather
than a table of zeros (top-k) and an undefined mean (MAP@R).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import UserError


class NothingToRetrieve(UserError, ValueError):
    """No group has two members, so no query has a relevant item to retrieve."""


def require_relevant_items(labels: np.ndarray, source: str = "the groups") -> None:
    """Raises NothingToRetrieve unless some group of `labels` ((n,) ids) has two members.

    Args:
      labels: (n,) group ids.
      source: what the labels came from (a file name), for the message.
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if not np.any(counts > 1):
        raise NothingToRetrieve(
            f"{source}: {len(counts)} groups, none with two or more sentences: no sentence has "
            "a paraphrase to retrieve, so top-k and MAP@R are undefined")


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_chunk(queries, keys, query_offset, k):
    scores = queries @ keys.T                                   # [q, n]
    rows = query_offset + jnp.arange(queries.shape[0])[:, None]
    scores = jnp.where(rows == jnp.arange(keys.shape[0])[None, :], -jnp.inf, scores)
    return jax.lax.top_k(scores, k)


def nearest_neighbours(embeddings: np.ndarray, k: int, *, chunk_size: int = 1024
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows by inner product (exact, on device, in query chunks).

    Args:
      embeddings: (n, dim) unit vectors.
      k: neighbours per row, at most n - 1.
      chunk_size: queries per device call (bounds memory at chunk_size × n scores).

    Returns:
      (scores, indices), both (n, k), best first; a row never lists itself.
    """
    n = len(embeddings)
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} embeddings, got {k}")
    keys = jnp.asarray(embeddings)
    scores, indices = [], []
    for start in range(0, n, chunk_size):
        s, i = _top_k_chunk(keys[start:start + chunk_size], keys, start, k)
        scores.append(np.asarray(s))
        indices.append(np.asarray(i))
    return np.concatenate(scores), np.concatenate(indices)


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray, ks=(1, 5, 10)
                      ) -> dict[str, float]:
    """top-k accuracies and MAP@R (docs/sentence_similarity.md §5) of every row against the others.

    Args:
      embeddings: (n, dim) unit vectors.
      labels: (n,) group ids.
      ks: the k of each top-k accuracy.

    Returns:
      {"top1": ..., "top5": ..., "top10": ..., "map_at_r": ...}. Rows whose group has no other
      member count as misses in top-k (as in the seed) and are left out of MAP@R (R = 0).

    Raises:
      NothingToRetrieve: when no group has two members.
    """
    require_relevant_items(labels)
    depth = search_depth(labels, ks)
    _, neighbours = nearest_neighbours(embeddings, depth)
    return metrics_from_neighbours(neighbours, labels, ks)


def search_depth(labels: np.ndarray, ks=(1, 5, 10)) -> int:
    """Neighbours needed for top-k and MAP@R: max(k, largest group − 1), at most n − 1."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return int(min(len(labels) - 1, max(max(ks), counts.max() - 1)))


def metrics_from_neighbours(neighbours: np.ndarray, labels: np.ndarray, ks=(1, 5, 10), *,
                            query_rows: np.ndarray | None = None) -> dict[str, float]:
    """top-k accuracies and MAP@R from each row's ranked neighbours.

    Args:
      neighbours: (q, depth) row indices, best first, never the query itself, depth at least
        `search_depth(labels, ks)`.
      labels: (n,) group ids of every searchable row.
      query_rows: (q,) the row of `labels` each line of `neighbours` queries for; default:
        all n rows in order (q = n).
    """
    labels = np.asarray(labels)
    rows = np.arange(len(labels)) if query_rows is None else np.asarray(query_rows)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    relevant = counts[inverse][rows] - 1                        # R per query
    hits = labels[neighbours] == labels[rows][:, None]          # [q, depth]
    metrics = {f"top{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    metrics["map_at_r"] = mean_average_precision_at_r(hits, relevant)
    return metrics


def mean_average_precision_at_r(hits: np.ndarray, relevant: np.ndarray) -> float:
    """MAP@R over the queries with R ≥ 1.

    Args:
      hits: (queries, depth) bools, rank 1 first; depth ≥ max R.
      relevant: (queries,) each query's R, the number of other members of its group.

    Raises:
      NothingToRetrieve: when every R is 0 (the mean over no query is undefined).
    """
    if not np.any(relevant > 0):
        raise NothingToRetrieve("no query has a relevant item (every R is 0): MAP@R is "
                                "undefined")
    ranks = np.arange(1, hits.shape[1] + 1)
    precision = np.cumsum(hits, axis=1) / ranks
    within_r = ranks[None, :] <= relevant[:, None]
    average = (precision * hits * within_r).sum(axis=1) / np.maximum(relevant, 1)
    return float(average[relevant > 0].mean())
