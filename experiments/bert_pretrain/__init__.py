"""Masked-LM pre-training of a small BERT on Chinese text, written as a Hugging Face checkpoint.

The checkpoint (config.json, model.safetensors, vocab.txt) is what the NL2SQL experiment
fine-tunes with `--config.bert.checkpoint` (docs/nl2sql.md §5).
"""

from experiments.bert_pretrain.config import get_config
from experiments.bert_pretrain.train import run

__all__ = ["get_config", "run"]
