"""WGAN-div and its baselines (DCGAN, WGAN-GP, WGAN-SN) on 2-D mixtures or image folders.

The post: https://kexue.fm/archives/6139; the method in this repository: docs/wgan_div.md.
"""

from experiments.gan.config import get_config
from experiments.gan.train import run

__all__ = ["get_config", "run"]
