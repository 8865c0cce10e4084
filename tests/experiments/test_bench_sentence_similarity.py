"""Tests for experiments/benchmarks/sentence_similarity.py: quick rows, and a fair comparison.

The PyTorch check copies the JAX model's weights into the PyTorch baseline and compares losses
on one batch: the two sides of the steps/s comparison compute the same function.
"""

import importlib.util

import numpy as np
import pytest

from experiments.benchmarks import harness, sentence_similarity


def test_sentence_similarity_quick_rows():
    report = harness.Report("sentence_similarity")
    sentence_similarity.run(report, quick=True)
    impls = [r.impl for r in report.rows]
    assert any("JAX" in impl for impl in impls)
    assert all(r.median_s > 0 for r in report.rows)
    baselines = [r for r in report.rows if r.baseline]
    if importlib.util.find_spec("torch") is None:
        assert not baselines
        return
    (baseline,) = baselines
    assert "PyTorch" in baseline.impl
    assert all(report.speedup(r) > 0 for r in report.rows)
    (speed,) = report.findings
    jax_row = next(r for r in report.rows if "JAX" in r.impl)
    assert speed.value == pytest.approx(baseline.median_s / jax_row.median_s)
    assert speed.target == sentence_similarity.TARGET_SPEED_RATIO


@pytest.fixture
def twin_trainers():
    """A JAX trainer and a PyTorch trainer holding the same weights, plus batches."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads crawl on a loaded 2-core machine
    vocab_size, num_classes = 200, 50
    config = sentence_similarity.benchmark_config(batch_size=16)
    jax_side = sentence_similarity.JaxTrainer(config, vocab_size, num_classes)
    torch_side = sentence_similarity.TorchTrainer(config, vocab_size, num_classes)
    torch_side.load_jax_params(jax_side.state["params"])
    batches = sentence_similarity.make_batches(vocab_size, num_classes, 16,
                                               config.data.maxlen, count=2, seed=5)
    yield jax_side, torch_side, batches
    torch.set_num_threads(threads)


def test_torch_and_jax_steps_agree(twin_trainers):
    # Step 0 on the same weights and batch: the same loss. Then the losses each side reports
    # at step 1 (after its Adam update and column projection) on a second batch: equal within
    # the rounding that Adam's first, sign-like step g / (|g| + eps) amplifies.
    jax_side, torch_side, batches = twin_trainers
    untrained_loss = torch_side.loss(batches[1])
    jax_loss, torch_loss = jax_side.step(batches[0]), torch_side.step(batches[0])
    assert np.isfinite(jax_loss) and jax_loss > 0
    np.testing.assert_allclose(jax_loss, torch_loss, rtol=1e-4)
    jax_loss, torch_loss = jax_side.step(batches[1]), torch_side.step(batches[1])
    assert abs(jax_loss - untrained_loss) > 1e-3  # the update really moved the weights
    np.testing.assert_allclose(jax_loss, torch_loss, rtol=1e-3)
    kernel = np.asarray(jax_side.state["params"]["classifier"]["kernel"])
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(torch_side.model.class_weights.detach().numpy(), kernel,
                               atol=1e-4)
