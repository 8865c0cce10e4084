"""MAP@R and top-k with singleton groups: well defined, never NaN."""

import numpy as np
import pytest

from experiments.errors import UserError
from experiments.sentence_similarity import retrieval


def test_map_at_r_averages_over_queries_with_a_relevant_item_only():
    # Query 0 (R = 2) has one hit within its first 2 ranks, at rank 2: AP = (1/2) / 2.
    # Query 1 (R = 1) hits at rank 1: AP = 1. Query 2 is a singleton (R = 0): left out,
    # not counted as 0, so MAP@R = (0.25 + 1) / 2.
    hits = np.array([[False, True], [True, False], [False, False]])
    assert retrieval.mean_average_precision_at_r(hits, np.array([2, 1, 0])) == 0.625


def test_map_at_r_of_no_relevant_item_is_refused_not_nan():
    hits = np.zeros((3, 2), bool)
    with pytest.raises(retrieval.NothingToRetrieve, match="every R is 0"):
        retrieval.mean_average_precision_at_r(hits, np.zeros(3, int))


def test_all_singleton_groups_are_a_user_error_naming_the_source():
    embeddings = np.eye(4, dtype=np.float32)
    with pytest.raises(UserError, match="groups.tsv: 4 groups, none with two"):
        retrieval.require_relevant_items(np.arange(4), "groups.tsv")
    with pytest.raises(retrieval.NothingToRetrieve):
        retrieval.retrieval_metrics(embeddings, np.arange(4), ks=(1,))


def test_singletons_mixed_with_pairs_count_as_top_k_misses():
    # Rows 0 and 1 are a pair and nearest to each other; row 2 is a singleton.
    embeddings = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    metrics = retrieval.retrieval_metrics(embeddings, np.array([7, 7, 9]), ks=(1,))
    assert metrics == {"top1": pytest.approx(2 / 3), "map_at_r": 1.0}
