"""Character LM with Atrous, Local, Sparse or alternating attention; validation bits per character (SPEC §4, kexue.fm/archives/6853)."""

from experiments.sparse_lm.config import get_config
from experiments.sparse_lm.train import run

__all__ = ["get_config", "run"]
