"""Seq2seq headline generation with synchronous bidirectional decoding.

The post: https://kexue.fm/archives/6877; the method in this repository: docs/headlines.md.
"""

from experiments.headlines.config import get_config
from experiments.headlines.train import run

__all__ = ["get_config", "run"]
