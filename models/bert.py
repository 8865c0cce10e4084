"""A BERT encoder (Devlin et al. 2019, arXiv 1810.04805) that loads Hugging Face checkpoints.

The encoder of the NL2SQL model of https://kexue.fm/archives/6771 (docs/nl2sql.md §1).

Glossary of shapes: B batch, T tokens, H hidden size, A heads, D = H / A head size,
F intermediate (feed-forward) size, V vocabulary.

Post-layer-norm blocks as in the original BERT: x = LN(x + Attn(x)); x = LN(x + FFN(x)).
Attention goes through `kernels.attention.attention` with the `Full` pattern and a key mask
built from `attention_mask` (1 = real token, 0 = padding). Dropout on attention
probabilities is not applied (the attention kernel has no such hook); hidden dropout is.

A local checkpoint directory in the Hugging Face layout loads through `from_pretrained`:
`config.json` plus `model.safetensors`, `pytorch_model.bin` (read by torch with
`weights_only=True`; torch must be installed) or `flax_model.msgpack` (flax.serialization).
Every tensor goes through the explicit table `checkpoint_names`; a tensor the table does not
know, or a parameter no tensor sets, is an error.
"""

import dataclasses
import json
import pathlib
import re
from collections.abc import Mapping

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from experiments.errors import UserError
from kernels.attention import Full, attention
from models import transformer

# hidden_act of config.json -> the function (Hugging Face's names).
ACTIVATIONS = {
    "gelu": transformer.gelu,                                # exact, with erf
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # the tanh approximation
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}

# Checkpoint tensors that are not part of the encoder: the pre-training heads and the
# position-id buffer some PyTorch checkpoints carry.
IGNORED_PREFIXES = ("cls.", "embeddings.position_ids")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "flax_model.msgpack")


class CheckpointError(UserError):
    """A checkpoint directory that cannot be loaded: names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face `config.json` the encoder uses."""

    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, values: Mapping) -> "BertConfig":
        """The config from a parsed config.json; unknown keys are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        config = cls(**{key: value for key, value in values.items() if key in known})
        if config.hidden_act not in ACTIVATIONS:
            raise CheckpointError(f"hidden_act {config.hidden_act!r} is not supported; "
                                  f"valid: {', '.join(ACTIVATIONS)}")
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(f"hidden_size {config.hidden_size} is not a multiple of "
                                  f"num_attention_heads {config.num_attention_heads}")
        return config

    def to_dict(self) -> dict:
        """config.json contents readable by transformers' `BertConfig`."""
        return {"model_type": "bert", "architectures": ["BertForMaskedLM"],
                **dataclasses.asdict(self), "attention_probs_dropout_prob": 0.0}


class BertLayer(nn.Module):
    """One post-LN transformer block."""

    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, *, deterministic: bool):
        """x: [B, T, H]; key_mask: bool [B, T] -> [B, T, H]."""
        c = self.config
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        dense = lambda size, name: nn.Dense(  # noqa: E731
            size, dtype=self.dtype, name=name,
            kernel_init=nn.initializers.normal(c.initializer_range))
        norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype,  # noqa
                                         name=name)
        batch, length, _ = x.shape
        split = lambda y: y.reshape(batch, length, heads, head_dim)  # noqa: E731
        q = split(dense(c.hidden_size, "query")(x))                    # [B, T, A, D]
        k = split(dense(c.hidden_size, "key")(x))
        v = split(dense(c.hidden_size, "value")(x))
        context = attention(q, k, v, Full(), key_mask=key_mask)       # [B, T, A, D]
        attended = dense(c.hidden_size, "attention_output")(
            context.reshape(batch, length, c.hidden_size))
        attended = nn.Dropout(c.hidden_dropout_prob)(attended, deterministic=deterministic)
        x = norm("attention_norm")(x + attended)
        hidden = ACTIVATIONS[c.hidden_act](dense(c.intermediate_size, "intermediate")(x))
        out = dense(c.hidden_size, "output")(hidden)                   # [B, T, H]
        out = nn.Dropout(c.hidden_dropout_prob)(out, deterministic=deterministic)
        return norm("output_norm")(x + out)


class BertEncoder(nn.Module):
    """Token, position and token-type embeddings, then `num_hidden_layers` blocks.

    Attributes:
      config: the sizes (a `BertConfig`).
      add_pooler: also create the pooler (tanh(Dense(H)) of the first token), returned by
        `pooled` and loaded from checkpoints that have one.
      dtype: compute dtype; parameters stay float32.
    """

    config: BertConfig
    add_pooler: bool = False
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        init = nn.initializers.normal(c.initializer_range)
        self.word_embeddings = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init)
        self.position_embeddings = nn.Embed(c.max_position_embeddings, c.hidden_size,
                                            embedding_init=init)
        self.token_type_embeddings = nn.Embed(c.type_vocab_size, c.hidden_size,
                                              embedding_init=init)
        self.embeddings_norm = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype)
        self.embeddings_dropout = nn.Dropout(c.hidden_dropout_prob)
        self.layers = [BertLayer(c, self.dtype, name=f"layer_{i}")
                       for i in range(c.num_hidden_layers)]
        if self.add_pooler:
            self.pooler = nn.Dense(c.hidden_size, dtype=self.dtype, kernel_init=init)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *,
                 deterministic: bool = True, all_layers: bool = False):
        """Encodes a batch.

        Args:
          input_ids: int [B, T].
          token_type_ids: int [B, T] (default zeros).
          attention_mask: [B, T], 1 for real tokens, 0 for padding (default all ones).
          deterministic: False applies hidden dropout (needs a "dropout" rng).
          all_layers: return every layer's output instead of the last one.

        Returns:
          [B, T, H] the last layer's hidden states; with `all_layers`, a tuple of
          num_hidden_layers + 1 such arrays (embeddings first, as transformers'
          `hidden_states`).
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))              # [B, T, H]
        x = self.embeddings_norm(x.astype(self.dtype))
        x = self.embeddings_dropout(x, deterministic=deterministic)
        key_mask = attention_mask.astype(bool)
        outputs = [x]
        for layer in self.layers:
            x = layer(x, key_mask, deterministic=deterministic)
            outputs.append(x)
        if self.add_pooler:  # created (and loaded) even when not used
            self.pooled(x)
        return tuple(outputs) if all_layers else x

    def pooled(self, hidden):
        """tanh(Dense(H)) of the first token: [B, T, H] -> [B, H] (needs add_pooler)."""
        return jnp.tanh(self.pooler(hidden[:, 0]))

    def embed_matrix(self):
        """The word-embedding matrix [V, H] (tied output layer of masked-LM pre-training)."""
        return self.word_embeddings.embedding


# ------------------------------------------------------------------------------------------
# The masked-LM head of `BertForMaskedLM` (Devlin et al. 2019, arXiv 1810.04805):
# logits = LN(act(Dense(H)(x))) · Eᵀ + b over the predicted positions only, E the tied
# word-embedding matrix [V, H]. Its parameters are written under transformers' `cls.` names
# (`head_tensors`), so a pre-trained checkpoint also loads as a `BertForMaskedLM`.


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


# ------------------------------------------------------------------------------------------
# Checkpoints.

# Per-layer tensors: Hugging Face name under encoder.layer.{i}. -> our module under layer_{i}.
_LAYER_NAMES = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}


def checkpoint_names(config: BertConfig, add_pooler: bool) -> dict[str, tuple[tuple, str]]:
    """The name-mapping table: checkpoint tensor name -> (parameter path, kind).

    kind "dense_kernel": a PyTorch Linear weight [out, in], transposed to a kernel [in, out];
    "copy": the same array. Names are those of transformers' `BertModel` state dict
    (a `bert.` prefix and TensorFlow-style gamma/beta are handled by `canonical_name`).
    """
    table = {
        "embeddings.word_embeddings.weight": (("word_embeddings", "embedding"), "copy"),
        "embeddings.position_embeddings.weight": (("position_embeddings", "embedding"),
                                                  "copy"),
        "embeddings.token_type_embeddings.weight": (("token_type_embeddings", "embedding"),
                                                    "copy"),
        "embeddings.LayerNorm.weight": (("embeddings_norm", "scale"), "copy"),
        "embeddings.LayerNorm.bias": (("embeddings_norm", "bias"), "copy"),
    }
    for i in range(config.num_hidden_layers):
        for theirs, ours in _LAYER_NAMES.items():
            is_norm = "LayerNorm" in theirs
            table[f"encoder.layer.{i}.{theirs}.weight"] = (
                (f"layer_{i}", ours, "scale" if is_norm else "kernel"),
                "copy" if is_norm else "dense_kernel")
            table[f"encoder.layer.{i}.{theirs}.bias"] = ((f"layer_{i}", ours, "bias"), "copy")
    if add_pooler:
        table["pooler.dense.weight"] = (("pooler", "kernel"), "dense_kernel")
        table["pooler.dense.bias"] = (("pooler", "bias"), "copy")
    return table


def canonical_name(name: str) -> str:
    """A checkpoint name as `checkpoint_names` spells it: no `bert.` prefix, LayerNorm
    gamma/beta (TensorFlow conversions) as weight/bias."""
    name = name.removeprefix("bert.")
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def params_from_tensors(tensors: Mapping[str, np.ndarray], config: BertConfig,
                        add_pooler: bool, *, source: str = "checkpoint"
                        ) -> tuple[dict, list[str]]:
    """Builds the parameter tree from named tensors through `checkpoint_names`.

    Args:
      tensors: checkpoint name -> array (PyTorch layout).
      config: the sizes the arrays must have.
      add_pooler: whether the pooler is wanted (and must be present).
      source: the file, for error messages.

    Returns:
      (params, ignored): the nested {"params"-level} tree of float32 arrays and the sorted
      names skipped as non-encoder tensors (`IGNORED_PREFIXES`).

    Raises:
      CheckpointError: a tensor used twice (two spellings of one name), an unknown tensor,
        a parameter no tensor sets, or a shape that does not match `config`.
    """
    table = checkpoint_names(config, add_pooler)
    params, used, ignored = {}, {}, []
    for name, array in tensors.items():
        key = canonical_name(name)
        if key.startswith(IGNORED_PREFIXES) or (key.startswith("pooler.") and not add_pooler):
            ignored.append(name)
            continue
        if key not in table:
            raise CheckpointError(f"{source}: tensor {name!r} is not a BERT encoder weight")
        if key in used:
            raise CheckpointError(f"{source}: tensors {used[key]!r} and {name!r} both set "
                                  f"{key!r}")
        used[key] = name
        path, kind = table[key]
        value = np.asarray(array, np.float32)
        value = value.T if kind == "dense_kernel" else value
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    missing = sorted(set(table) - set(used))
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} encoder weights missing, e.g. "
                              f"{', '.join(missing[:3])}")
    _check_shapes(params, config, add_pooler, source)
    return params, sorted(ignored)


def _check_shapes(params: dict, config: BertConfig, add_pooler: bool, source: str) -> None:
    expected = jax.eval_shape(
        lambda: BertEncoder(config, add_pooler).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"])
    for path, shape in jax.tree_util.tree_flatten_with_path(expected)[0]:
        node = params
        for part in path:
            node = node[part.key]
        if tuple(node.shape) != tuple(shape.shape):
            raise CheckpointError(f"{source}: {jax.tree_util.keystr(path)} has shape "
                                  f"{tuple(node.shape)}, config.json implies "
                                  f"{tuple(shape.shape)}")


def flax_msgpack_to_tensors(tree: Mapping) -> dict[str, np.ndarray]:
    """Flattens a Hugging Face Flax BERT parameter tree to PyTorch-style names and layouts.

    Flax names `kernel` ([in, out], transposed back here), `scale` and `embedding` become
    `weight`; `encoder.layer.{i}` nesting becomes dotted names.
    """
    if "params" in tree and len(tree) == 1:
        tree = tree["params"]
    flat = {}

    def visit(node, prefix):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                visit(value, name)
            elif key == "kernel":
                flat[name[:-len("kernel")] + "weight"] = np.asarray(value).T
            elif key in ("scale", "embedding"):
                flat[name[:-len(key)] + "weight"] = np.asarray(value)
            else:
                flat[name] = np.asarray(value)

    visit(tree, "")
    return flat


def read_tensors(directory: pathlib.Path) -> tuple[dict[str, np.ndarray], pathlib.Path]:
    """The named tensors of the first weight file of `WEIGHT_FILES` in `directory`."""
    for file_name in WEIGHT_FILES:
        path = directory / file_name
        if path.is_file():
            break
    else:
        raise CheckpointError(f"{directory}: none of {', '.join(WEIGHT_FILES)} found")
    if file_name == "model.safetensors":
        return safetensors.numpy.load_file(str(path)), path
    if file_name == "flax_model.msgpack":
        return flax_msgpack_to_tensors(flax.serialization.msgpack_restore(
            path.read_bytes())), path
    try:
        import torch  # optional: only for pytorch_model.bin
    except ImportError:
        raise CheckpointError(f"{path}: reading a PyTorch checkpoint needs torch; convert it "
                              "to model.safetensors or install torch") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: value.float().numpy() for name, value in state.items()}, path


def from_pretrained(directory, *, add_pooler: bool = False, dtype=jnp.float32
                    ) -> tuple[BertEncoder, dict]:
    """Loads a local Hugging Face BERT checkpoint directory.

    Args:
      directory: holds config.json and one of `WEIGHT_FILES`.
      add_pooler: also load the pooler (the checkpoint must have it).
      dtype: compute dtype of the returned model.

    Returns:
      (model, variables): `model.apply(variables, input_ids, token_type_ids,
      attention_mask)` gives the last hidden states [B, T, H].

    Raises:
      CheckpointError: a missing or malformed file, or weights that do not fit config.json.
    """
    directory = pathlib.Path(directory)
    config = read_config(directory)
    tensors, path = read_tensors(directory)
    params, _ = params_from_tensors(tensors, config, add_pooler, source=str(path))
    return BertEncoder(config, add_pooler, dtype), {"params": params}


def read_config(directory: pathlib.Path) -> BertConfig:
    """The `BertConfig` of `directory/config.json`."""
    path = pathlib.Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (a BERT checkpoint directory needs it)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON: {error}") from None
    return BertConfig.from_dict(values)


def tensors_from_params(params: Mapping, config: BertConfig, add_pooler: bool
                        ) -> dict[str, np.ndarray]:
    """The inverse of `params_from_tensors`: our parameters under checkpoint names."""
    tensors = {}
    for name, (path, kind) in checkpoint_names(config, add_pooler).items():
        node = params
        for part in path:
            node = node[part]
        value = np.asarray(node, np.float32)
        tensors[name] = np.ascontiguousarray(value.T if kind == "dense_kernel" else value)
    return tensors


def save_pretrained(directory, config: BertConfig, params: Mapping, *, add_pooler: bool = False,
                    extra_tensors: Mapping[str, np.ndarray] | None = None,
                    vocab: list[str] | None = None) -> None:
    """Writes config.json, model.safetensors (names with the `bert.` prefix of
    `BertForMaskedLM`, plus `extra_tensors` such as the `cls.` head) and vocab.txt."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"bert.{name}": value
               for name, value in tensors_from_params(params, config, add_pooler).items()}
    tensors.update({name: np.ascontiguousarray(np.asarray(value, np.float32))
                    for name, value in (extra_tensors or {}).items()})
    safetensors.numpy.save_file(tensors, str(directory / "model.safetensors"),
                                metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if vocab is not None:
        (directory / "vocab.txt").write_text("".join(token + "\n" for token in vocab),
                                             encoding="utf-8")
