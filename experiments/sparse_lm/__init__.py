"""Character LM with Atrous, Local, Sparse or alternating attention; validation bits/char.

The post: https://kexue.fm/archives/6853; the method in this repository: docs/sparse_attention.md.
"""

from experiments.sparse_lm.config import get_config
from experiments.sparse_lm.train import run

__all__ = ["get_config", "run"]
