"""BERT encoder forward+backward: `models.bert.BertEncoder` (JAX) vs transformers' BertModel.

What NL2SQL fine-tuning costs per step (docs/nl2sql.md §6): the encoder at the seed's batch
32 and length 160, BERT-base widths (hidden 768, 12 heads, feed-forward 3072, vocabulary
21,128), with 4 and with 12 layers. A timed call is the forward pass, a scalar loss (mean of
the squared last hidden states) and the gradients of every parameter; dropout off on both
sides, float32, padding in every row (the last 25% of positions masked in half the rows).

* JAX (`BertEncoder`, jitted, attention through `kernels.attention`).
* PyTorch: `transformers.BertModel` (its default attention), gradients set to None between
  calls; with the machine's core count as intra-op threads (the baseline) and with 1 thread
  (on a loaded machine OpenMP workers can wait on each other).

On a GPU (JAX's default backend "gpu"), both sides run there, in float32 and in bfloat16:
JAX with `BertEncoder(dtype=bfloat16)` (parameters float32), PyTorch under
`torch.autocast("cuda", torch.bfloat16)`; float32 matmuls are those each framework defaults
to (TF32 in both). The PyTorch float32 row is each dtype group's baseline.

Memory: JAX rows carry XLA's compiled memory analysis (temporaries, arguments); every row
records the process's peak resident set after it (`max_rss_bytes`, monotone within the one
process, so a later row's figure includes the earlier rows' peak), and on a GPU the peak
device memory of each side (`peak_device_bytes`, torch's `max_memory_allocated`, reset per
row). Where the time goes: on CPU one more call of the baseline and of JAX runs under each
framework's profiler, and a note gives its op time by kind (matmuls, the fused attention
kernel, data movement, the rest; `harness.op_time_by_kind`). `--quick` runs a 1-layer,
hidden-64 model at batch 4, length 16.
"""

import contextlib
import os
import resource

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import harness
from models import bert

FULL = dict(batch=32, length=160, vocab_size=21128, hidden_size=768, num_heads=12,
            intermediate_size=3072, layers=(4, 12), repeats={4: 3, 12: 2},
            torch_threads=(os.cpu_count() or 1, 1), dtypes=("float32",))
# On a GPU: BERT-base itself (12 layers), one torch row (its intra-op threads do not matter
# there), float32 and bfloat16.
GPU = dict(FULL, layers=(12,), repeats={12: 10}, torch_threads=(1,),
           dtypes=("float32", "bfloat16"))
QUICK = dict(batch=4, length=16, vocab_size=100, hidden_size=64, num_heads=4,
             intermediate_size=128, layers=(1,), repeats={1: 2}, torch_threads=(1,),
             dtypes=("float32",))


def fwd_bwd_flops(batch: int, length: int, hidden: int, intermediate: int, layers: int
                  ) -> float:
    """Matmul FLOPs of forward + backward (3× forward): per layer and token 2·(4H² + 2HF)
    for the projections and feed-forward, 2·2·T·H for scores and weighted sum."""
    per_token = 2 * (4 * hidden ** 2 + 2 * hidden * intermediate) + 4 * length * hidden
    return 3.0 * batch * length * layers * per_token


def make_inputs(batch: int, length: int, vocab_size: int, seed: int = 0):
    """int32 ids [B, T] and attention mask [B, T] (half the rows end in 25% padding)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[::2, length - length // 4:] = 0
    return ids, mask


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def time_jax(report: harness.Report, group: str, config: bert.BertConfig, ids, mask,
             repeats: int, flops: float, dtype: str = "float32") -> None:
    """Times jax.grad of the mean squared last hidden state of `BertEncoder` in ``dtype``."""
    model = bert.BertEncoder(config, dtype=jnp.dtype(dtype))
    # Jitted: run op by op, the initialisation dispatches hundreds of small programs, each
    # compiled on first use on a GPU.
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(ids[:1]))["params"]

    def loss_and_grads(params, ids, mask):
        def loss(params):
            hidden = model.apply({"params": params}, ids, None, mask)   # [B, T, H]
            return jnp.mean(jnp.square(hidden.astype(jnp.float32)))
        return jax.value_and_grad(loss)(params)

    args = (params, jnp.asarray(ids), jnp.asarray(mask))
    report.time_jax(group, f"jax BertEncoder {dtype}", loss_and_grads, *args, flops=flops,
                    repeats=repeats)
    report.rows[-1].extra["max_rss_bytes"] = _max_rss_bytes()
    if jax.default_backend() == "cpu":
        report.note_op_times(harness.op_time_by_kind(loss_and_grads, *args))


def time_torch(report: harness.Report, group: str, config: bert.BertConfig, ids, mask,
               repeats: int, flops: float, threads: int, baseline: bool,
               dtype: str = "float32") -> None:
    """Times forward + backward of transformers' BertModel with `threads` intra-op threads,
    on CUDA when JAX runs on a GPU (bfloat16 through autocast)."""
    import torch
    import transformers
    on_gpu = jax.default_backend() == "gpu"
    device = torch.device("cuda" if on_gpu else "cpu")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0), add_pooling_layer=False).train().to(device)
    ids_t = torch.from_numpy(ids.astype(np.int64)).to(device)
    mask_t = torch.from_numpy(mask.astype(np.int64)).to(device)
    autocast = (torch.autocast("cuda", torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        loss = hidden.float().square().mean()
        loss.backward()
        return loss.item()   # waits for the device

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    label = (f"torch BertModel cuda {dtype}" if on_gpu
             else f"torch BertModel ({torch.get_num_threads()} threads)")
    report.time_call(group, label, step, baseline=baseline, flops=flops, repeats=repeats,
                     shapes=f"ids {tuple(ids.shape)}")
    if baseline and not on_gpu:
        report.note_op_times(harness.torch_op_time_by_kind(step))
    report.rows[-1].extra["max_rss_bytes"] = _max_rss_bytes()
    if on_gpu:
        report.rows[-1].peak_device_bytes = torch.cuda.max_memory_allocated()
        del model
        torch.cuda.empty_cache()


def run(report: harness.Report, quick: bool) -> None:
    """One group per layer count: PyTorch baseline first, then JAX."""
    sizes = QUICK if quick else GPU if jax.default_backend() == "gpu" else FULL
    ids, mask = make_inputs(sizes["batch"], sizes["length"], sizes["vocab_size"])
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        report.note("torch/transformers not installed ([bench] extra): JAX rows only")
    for layers in sizes["layers"]:
        config = bert.BertConfig(vocab_size=sizes["vocab_size"],
                                 hidden_size=sizes["hidden_size"], num_hidden_layers=layers,
                                 num_attention_heads=sizes["num_heads"],
                                 intermediate_size=sizes["intermediate_size"],
                                 hidden_dropout_prob=0.0)
        flops = fwd_bwd_flops(sizes["batch"], sizes["length"], sizes["hidden_size"],
                              sizes["intermediate_size"], layers)
        repeats = sizes["repeats"][layers]
        for dtype in sizes["dtypes"]:
            group = (f"{layers} layers, H={sizes['hidden_size']}, B={sizes['batch']}, "
                     f"T={sizes['length']} fwd+bwd"
                     + (f", {dtype}" if len(sizes["dtypes"]) > 1 else ""))
            if have_torch:
                for index, threads in enumerate(sizes["torch_threads"]):
                    time_torch(report, group, config, ids, mask, repeats, flops, threads,
                               baseline=index == 0, dtype=dtype)
            time_jax(report, group, config, ids, mask, repeats, flops, dtype)
            if report.baseline_of(group) is not None:
                report.finding(f"{group}: time of PyTorch / JAX",
                               report.speedup(report.rows[-1]), speed=True,
                               detail=f"JAX temporaries "
                               f"{(report.rows[-1].temp_bytes or 0) / 2**20:.1f} MiB")
