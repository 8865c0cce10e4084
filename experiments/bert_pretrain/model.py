"""BERT with the masked-LM head of `BertForMaskedLM` (Devlin et al. 2019, arXiv 1810.04805).

logits = LN(act(Dense(H)(x))) · Eᵀ + b over the predicted positions only: E is the tied
word-embedding matrix [V, H]. The head's parameters are written under transformers' `cls.`
names (`head_tensors`), so the checkpoint also loads as a `BertForMaskedLM`.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from models.bert import ACTIVATIONS, BertConfig, BertEncoder


class BertForMaskedLM(nn.Module):
    """Encoder ("bert") plus the tied masked-LM head.

    Attributes:
      config: the encoder's sizes.
      dtype: compute dtype; parameters stay float32.
    """

    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids, token_mask, positions, *, deterministic: bool = True):
        """Vocabulary logits at `positions`.

        Args:
          token_ids, token_mask: int [B, T] (the masked input; 1 = real token).
          positions: int [B, K], the predicted positions.
          deterministic: False applies the encoder's dropout.

        Returns:
          float32 [B, K, V].
        """
        c = self.config
        encoder = BertEncoder(c, dtype=self.dtype, name="bert")
        x = encoder(token_ids, None, token_mask, deterministic=deterministic)   # [B, T, H]
        x = jnp.take_along_axis(x, positions[..., None], axis=1)                # [B, K, H]
        x = nn.Dense(c.hidden_size, dtype=self.dtype, name="transform",
                     kernel_init=nn.initializers.normal(c.initializer_range))(x)
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype,
                         name="transform_norm")(ACTIVATIONS[c.hidden_act](x))
        bias = self.param("output_bias", nn.initializers.zeros, (c.vocab_size,))
        logits = x.astype(jnp.float32) @ encoder.embed_matrix().T                # [B, K, V]
        return logits + bias


def head_tensors(params) -> dict[str, np.ndarray]:
    """The head's parameters under `BertForMaskedLM`'s names (PyTorch layout)."""
    return {
        "cls.predictions.transform.dense.weight": np.asarray(params["transform"]["kernel"]).T,
        "cls.predictions.transform.dense.bias": np.asarray(params["transform"]["bias"]),
        "cls.predictions.transform.LayerNorm.weight":
            np.asarray(params["transform_norm"]["scale"]),
        "cls.predictions.transform.LayerNorm.bias": np.asarray(params["transform_norm"]["bias"]),
        "cls.predictions.bias": np.asarray(params["output_bias"]),
    }
