"""Tests for experiments/gan/mixture.py: definitions, sampling and the VEEGAN/PacGAN score."""

import itertools
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.gan import mixture as mx

# In 2-D, ‖x − μ‖² / σ² of an isotropic Gaussian is χ²₂, so P(‖x − μ‖ < 3σ) = 1 − e^{−9/2}.
WITHIN_3_STD_2D = 1.0 - math.exp(-4.5)  # 0.98889


def test_ring_definition():
    ring = mx.mixture("ring")
    assert ring.means.shape == (8, 2) and ring.std == 0.02
    np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 2.0, rtol=1e-12)
    expected = [(2 * math.cos(k * math.pi / 4), 2 * math.sin(k * math.pi / 4)) for k in range(8)]
    np.testing.assert_allclose(ring.means, expected, atol=1e-12)


def test_grid_definition():
    grid = mx.mixture("grid")
    assert grid.means.shape == (25, 2) and grid.std == 0.05
    expected = sorted(itertools.product((-4.0, -2.0, 0.0, 2.0, 4.0), repeat=2))
    assert sorted(map(tuple, grid.means.tolist())) == expected


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_samples_have_the_mixture_statistics(name):
    mix = mx.mixture(name)
    points = mx.sample(mix, np.random.default_rng(0), 40_000)
    assert points.shape == (40_000, 2) and points.dtype == np.float32
    modes, _ = mx.nearest_modes(mix, points)
    counts = np.bincount(modes, minlength=mix.num_modes)
    expected = 40_000 / mix.num_modes
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))  # uniform weights
    deviations = points - mix.means[modes]
    np.testing.assert_allclose(deviations.mean(0), 0.0, atol=5 * mix.std / 200)
    np.testing.assert_allclose(deviations.std(0), mix.std, rtol=0.02)


def test_sample_accepts_jax_keys_and_seeds_deterministically():
    mix = mx.mixture("ring")
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(mx.sample(mix, key, 100), mx.sample(mix, key, 100))
    np.testing.assert_array_equal(mx.sample(mix, 7, 100), mx.sample(mix, 7, 100))
    assert not np.array_equal(mx.sample(mix, 7, 100), mx.sample(mix, 8, 100))
    assert mx.sample(mix, key, 0).shape == (0, 2)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_true_samples_cover_every_mode_with_the_chi_square_share(name):
    mix = mx.mixture(name)
    score = mx.score_samples(mix, mx.sample(mix, np.random.default_rng(1), 20_000))
    assert score["modes_covered"] == mix.num_modes == score["num_modes"]
    # Binomial std at n = 20000 is 0.00074: 6 of them.
    assert abs(score["high_quality"] - WITHIN_3_STD_2D) < 0.0045
    assert sum(score["mode_counts"]) == round(score["high_quality"] * 20_000)


def test_paper_sized_evaluation_covers_every_mode():
    mix = mx.mixture("grid")
    score = mx.score_samples(mix, mx.sample(mix, np.random.default_rng(2), mx.NUM_EVAL_SAMPLES))
    assert score["modes_covered"] == 25 and score["high_quality"] > 0.97


def test_collapsed_samples_cover_one_mode():
    mix = mx.mixture("grid")
    rng = np.random.default_rng(3)
    collapsed = mix.means[7] + mix.std * rng.standard_normal((2500, 2))
    score = mx.score_samples(mix, collapsed)
    assert score["modes_covered"] == 1
    assert score["mode_counts"][7] == sum(score["mode_counts"])
    assert score["high_quality"] > 0.97


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_uniform_noise_is_rarely_high_quality(name):
    mix = mx.mixture(name)
    half_width = 6.0
    points = np.random.default_rng(4).uniform(-half_width, half_width, (200_000, 2))
    share = mx.score_samples(mix, points)["high_quality"]
    # The discs of radius 3σ are disjoint and inside the square: their area fraction.
    area_fraction = mix.num_modes * math.pi * (3 * mix.std) ** 2 / (2 * half_width) ** 2
    assert share < 0.02
    assert abs(share - area_fraction) < 5 * math.sqrt(area_fraction / 200_000) + 1e-4


def test_coverage_rule_counts_high_quality_samples_per_mode():
    mix = mx.ring()
    std = mix.std
    points = np.concatenate([
        mix.means[[0, 0, 0]] + [[std, 0], [0, std], [-std, 0]],  # 3 good samples on mode 0
        mix.means[[1]] + [[0, 2.9 * std]],                       # 1 good sample on mode 1
        mix.means[[2]] + [[0, 3.1 * std]],                       # just outside 3σ of mode 2
    ])
    score = mx.score_samples(mix, points)
    assert score["mode_counts"][:3] == [3, 1, 0]
    assert score["modes_covered"] == 2 and score["high_quality"] == pytest.approx(4 / 5)
    assert mx.score_samples(mix, points, min_samples_per_mode=2)["modes_covered"] == 1
    assert mx.score_samples(mix, points, num_stds=3.2)["modes_covered"] == 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=30))
def test_nearest_modes_against_a_loop(points):
    mix = mx.grid()
    modes, distances = mx.nearest_modes(mix, np.array(points))
    for (x, y), mode, distance in zip(points, modes, distances):
        all_distances = [math.hypot(x - mean_x, y - mean_y) for mean_x, mean_y in mix.means]
        assert distance == pytest.approx(min(all_distances), abs=1e-12)
        assert all_distances[mode] == pytest.approx(min(all_distances), abs=1e-12)


def test_custom_mixtures_take_their_arguments():
    ring = mx.ring(num_modes=3, radius=1.0, std=0.1)
    np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 1.0)
    assert ring.num_modes == 3 and ring.std == 0.1
    grid = mx.grid(side=2, spacing=1.0, std=0.2)
    assert sorted(map(tuple, grid.means.tolist())) == [(-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5),
                                                       (0.5, 0.5)]


def test_plot_samples_writes_a_png_without_touching_the_backend(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    mix = mx.mixture("ring")
    path = mx.plot_samples(mix, mx.sample(mix, 0, 500), tmp_path / "plots" / "ring.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert matplotlib.get_backend() == backend


@pytest.mark.parametrize("call, match", [
    (lambda: mx.mixture("spiral"), "unknown mixture"),
    (lambda: mx.score_samples(mx.ring(), np.zeros((4, 3))), r"shape \(n, 2\)"),
    (lambda: mx.score_samples(mx.ring(), np.zeros((0, 2))), "empty"),
    (lambda: mx.score_samples(mx.ring(), [[np.nan, 0.0]]), "finite"),
    (lambda: mx.score_samples(mx.ring(), np.zeros((1, 2)), min_samples_per_mode=0),
     "min_samples_per_mode"),
    (lambda: mx.ring(std=0.0), "std"),
    (lambda: mx.grid(side=0), "side"),
    (lambda: mx.sample(mx.ring(), 0, -1), "n must be"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
