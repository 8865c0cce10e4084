"""GRU sentence encoder trained over paraphrase groups with margin softmax; open-set FAQ retrieval (SPEC §1, kexue.fm/archives/5743)."""

from experiments.sentence_similarity.config import get_config
from experiments.sentence_similarity.train import run

__all__ = ["get_config", "run"]
