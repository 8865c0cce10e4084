"""models.bert: parity with transformers' PyTorch BertModel, and the checkpoint name table."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from models import bert

torch = pytest.importorskip("torch", reason="the parity tests need torch ([bench] extra)")
transformers = pytest.importorskip("transformers",
                                   reason="the parity tests need transformers' BertModel")

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=24, type_vocab_size=2)


def _write_checkpoint(directory, hidden_act):
    """A randomly initialised transformers BertModel saved with save_pretrained."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY, hidden_act=hidden_act,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so a swapped one would show
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(directory, safe_serialization=True)
    return model


def _inputs():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, TINY["vocab_size"], size=(3, 11))
    types = rng.integers(0, 2, size=(3, 11))
    mask = np.ones((3, 11), np.int64)
    mask[1, 7:] = 0   # padding at the end of two rows
    mask[2, 3:] = 0
    return ids, types, mask


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_every_layer_matches_transformers(tmp_path, hidden_act):
    reference = _write_checkpoint(tmp_path, hidden_act)
    model, variables = bert.from_pretrained(tmp_path, add_pooler=True)
    ids, types, mask = _inputs()
    ours = model.apply(variables, jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask),
                       all_layers=True)
    with torch.no_grad():
        theirs = reference(torch.tensor(ids), attention_mask=torch.tensor(mask),
                           token_type_ids=torch.tensor(types), output_hidden_states=True)
    assert len(ours) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    for layer, (a, b) in enumerate(zip(ours, theirs.hidden_states)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5, rtol=1e-5,
                                   err_msg=f"layer {layer}")
    pooled = model.apply(variables, ours[-1], method=bert.BertEncoder.pooled)
    np.testing.assert_allclose(np.asarray(pooled), theirs.pooler_output.numpy(), atol=1e-5)


def test_every_tensor_used_once_and_every_parameter_set(tmp_path):
    _write_checkpoint(tmp_path, "gelu")
    tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    config = bert.read_config(tmp_path)
    table = bert.checkpoint_names(config, add_pooler=True)
    names = {bert.canonical_name(name) for name in tensors} - {"embeddings.position_ids"}
    assert names == set(table)                                   # every tensor has a row
    paths = [path for path, _ in table.values()]
    assert len(set(paths)) == len(paths)                          # and a distinct target
    params, ignored = bert.params_from_tensors(tensors, config, add_pooler=True)
    expected = jax.eval_shape(lambda: bert.BertEncoder(config, True).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"])
    assert (jax.tree.structure(params) == jax.tree.structure(expected))
    assert set(ignored) <= {"embeddings.position_ids"}


def test_unknown_missing_and_duplicate_tensors_are_refused(tmp_path):
    _write_checkpoint(tmp_path, "gelu")
    tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    config = bert.read_config(tmp_path)
    with pytest.raises(bert.CheckpointError, match="not a BERT encoder weight"):
        bert.params_from_tensors({**tensors, "encoder.extra.weight": np.zeros(2)}, config,
                                 False)
    partial = dict(tensors)
    del partial["encoder.layer.1.output.dense.bias"]
    with pytest.raises(bert.CheckpointError, match="missing"):
        bert.params_from_tensors(partial, config, False)
    with pytest.raises(bert.CheckpointError, match="both set"):
        bert.params_from_tensors({**tensors, "bert.embeddings.LayerNorm.gamma":
                                  tensors["embeddings.LayerNorm.weight"]}, config, False)


def test_pytorch_bin_and_flax_msgpack_load_the_same_weights(tmp_path):
    reference = _write_checkpoint(tmp_path / "st", "gelu_new")
    (tmp_path / "bin").mkdir()
    (tmp_path / "msgpack").mkdir()
    for name in ("bin", "msgpack"):
        (tmp_path / name / "config.json").write_text((tmp_path / "st" / "config.json")
                                                      .read_text())
    torch.save(reference.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    _, variables = bert.from_pretrained(tmp_path / "st")
    _, from_bin = bert.from_pretrained(tmp_path / "bin")
    # The Hugging Face Flax layout: nested dicts, kernels [in, out], scale, embedding.
    params = variables["params"]
    tree = {"embeddings": {
        "word_embeddings": {"embedding": params["word_embeddings"]["embedding"]},
        "position_embeddings": {"embedding": params["position_embeddings"]["embedding"]},
        "token_type_embeddings": {"embedding": params["token_type_embeddings"]["embedding"]},
        "LayerNorm": params["embeddings_norm"]}, "encoder": {"layer": {}}}
    for i in range(TINY["num_hidden_layers"]):
        layer = params[f"layer_{i}"]
        tree["encoder"]["layer"][str(i)] = {
            "attention": {"self": {n: layer[n] for n in ("query", "key", "value")},
                          "output": {"dense": layer["attention_output"],
                                     "LayerNorm": layer["attention_norm"]}},
            "intermediate": {"dense": layer["intermediate"]},
            "output": {"dense": layer["output"], "LayerNorm": layer["output_norm"]}}
    (tmp_path / "msgpack" / "flax_model.msgpack").write_bytes(
        flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)))
    _, from_msgpack = bert.from_pretrained(tmp_path / "msgpack")
    for other in (from_bin, from_msgpack):
        jax.tree.map(np.testing.assert_array_equal, variables, other)


def test_save_pretrained_round_trips_through_transformers(tmp_path):
    config = bert.BertConfig(**TINY, hidden_act="gelu")
    model = bert.BertEncoder(config)
    params = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 4), jnp.int32))["params"]
    bert.save_pretrained(tmp_path, config, params, vocab=["[PAD]"] * TINY["vocab_size"])
    theirs = transformers.BertModel(transformers.BertConfig.from_pretrained(tmp_path),
                                    add_pooling_layer=False).eval()
    state = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    result = theirs.load_state_dict({name.removeprefix("bert."): torch.from_numpy(value)
                                     for name, value in state.items()}, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"embeddings.position_ids"}
    ids, types, mask = _inputs()
    ours = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(types),
                       jnp.asarray(mask))
    with torch.no_grad():
        expected = theirs(torch.tensor(ids), attention_mask=torch.tensor(mask),
                          token_type_ids=torch.tensor(types)).last_hidden_state
    np.testing.assert_allclose(np.asarray(ours), expected.numpy(), atol=1e-5, rtol=1e-5)
