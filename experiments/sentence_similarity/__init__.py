"""GRU sentence encoder over paraphrase groups with margin softmax; open-set FAQ retrieval.

The post: https://kexue.fm/archives/5743; the method in this repository:
docs/sentence_similarity.md.
"""

from experiments.sentence_similarity.config import get_config
from experiments.sentence_similarity.train import run

__all__ = ["get_config", "run"]
