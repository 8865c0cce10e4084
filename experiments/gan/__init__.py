"""WGAN-div and its baselines (DCGAN, WGAN-GP, WGAN-SN) on 2-D mixtures or image folders (SPEC §2, kexue.fm/archives/6139)."""

from experiments.gan.config import get_config
from experiments.gan.train import run

__all__ = ["get_config", "run"]
