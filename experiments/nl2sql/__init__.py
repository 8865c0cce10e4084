"""NL2SQL on TableQA with a BERT encoder: sel/agg, condition tagging, additive column scorer.

The post: https://kexue.fm/archives/6771; the method in this repository: docs/nl2sql.md.
"""

from experiments.nl2sql.config import get_config
from experiments.nl2sql.train import run

__all__ = ["get_config", "run"]
