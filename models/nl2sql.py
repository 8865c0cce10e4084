"""The NL2SQL heads of https://kexue.fm/archives/6771 on a BERT encoder (docs/nl2sql.md §1.3).

X = BERT's last hidden states [B, T, H]; Hh = X at the headers' [CLS] positions [B, NH, H].
  conn:   Dense(3)(X[:, 0])                              [B, 3]
  sel:    Dense(7)(Hh), class 6 = not selected           [B, NH, 7]
  cop:    Dense(5)(X), class 4 = not a condition value   [B, T, 5]
  csel:   w·tanh(A x_t + B Hh_j) + b, A, B Dense(256)    [B, T, NH], padding headers −1e10
The column scorer is the post's fixed additive one: the first version, Dense(1)(x_t) +
Dense(1)(Hh_j), ranks the columns the same for every token.
"""

import flax.linen as nn
import jax.numpy as jnp
import optax

from models.bert import BertConfig, BertEncoder

MASKED = -1e10


class NL2SQL(nn.Module):
    """BERT encoder plus the four heads.

    Attributes:
      bert: the encoder's sizes.
      column_hidden: the width of the additive column scorer (256 in the post).
      dtype: compute dtype.
    """

    bert: BertConfig
    column_hidden: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids, token_mask, header_positions, header_mask, *,
                 deterministic: bool = True):
        """Logits of the four heads.

        Args:
          token_ids, token_mask: int [B, T].
          header_positions, header_mask: int [B, NH].
          deterministic: False applies the encoder's dropout.

        Returns:
          {"conn": [B, 3], "sel": [B, NH, 7], "cop": [B, T, 5], "csel": [B, T, NH]},
          float32.
        """
        x = BertEncoder(self.bert, dtype=self.dtype, name="bert")(
            token_ids, jnp.zeros_like(token_ids), token_mask, deterministic=deterministic)
        heads = jnp.take_along_axis(x, header_positions[..., None], axis=1)  # [B, NH, H]
        dense = lambda size, name: nn.Dense(size, dtype=self.dtype, name=name)  # noqa: E731
        conn = dense(3, "conn")(x[:, 0])
        sel = dense(7, "sel")(heads)
        cop = dense(5, "cop")(x)
        token_part = dense(self.column_hidden, "column_token")(x)          # [B, T, C]
        header_part = dense(self.column_hidden, "column_header")(heads)    # [B, NH, C]
        joint = jnp.tanh(token_part[:, :, None, :] + header_part[:, None, :, :])
        csel = dense(1, "column_score")(joint)[..., 0]                     # [B, T, NH]
        csel = jnp.where(header_mask[:, None, :] > 0, csel.astype(jnp.float32), MASKED)
        return {"conn": conn.astype(jnp.float32), "sel": sel.astype(jnp.float32),
                "cop": cop.astype(jnp.float32), "csel": csel}


def _masked_mean(values, mask):
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def nl2sql_loss(logits, batch) -> tuple[jnp.ndarray, dict]:
    """Sum of the four cross-entropies (docs/nl2sql.md §1.5).

    sel averaged over real headers; conn over the batch; cop over question characters;
    csel over question characters that carry a value (cop label ≠ 4).

    Args:
      logits: the output of `NL2SQL`.
      batch: labels sel [B, NH], conn [B], cop, csel [B, T]; masks header_mask [B, NH],
        question_mask [B, T].

    Returns:
      (loss, {"loss_sel", "loss_conn", "loss_cop", "loss_csel"}).
    """
    ce = optax.softmax_cross_entropy_with_integer_labels
    parts = {
        "loss_sel": _masked_mean(ce(logits["sel"], batch["sel"]), batch["header_mask"]),
        "loss_conn": jnp.mean(ce(logits["conn"], batch["conn"])),
        "loss_cop": _masked_mean(ce(logits["cop"], batch["cop"]), batch["question_mask"]),
        "loss_csel": _masked_mean(ce(logits["csel"], batch["csel"]),
                                  batch["question_mask"] * (batch["cop"] != 4)),
    }
    return sum(parts.values()), parts
