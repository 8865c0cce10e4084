"""Tests for experiments/gan/metrics.py and experiments/gan/inception.py.

References: closed forms (Fréchet distance of diagonal Gaussians, sliced W1 of a shifted
set), scipy (sqrtm, wasserstein_distance, ndimage.convolve), a plain O(n²) MMD loop, torch
convolutions, and a torch Inception-v3 written here from torchvision's layer listing.
"""

import math

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.stats
from flax import traverse_util
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.gan import inception, metrics

# ---------------------------------------------------------------------------------------
# Fréchet distance


def _random_covariance(rng, d, rank=None):
    factor = rng.standard_normal((d, rank or d))
    return factor @ factor.T / d + (0 if rank else 0.1 * np.eye(d))


def _frechet_with_scipy_sqrtm(mu1, sigma1, mu2, sigma2):
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2 ** 31 - 1))
def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form(d, seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.01, 4.0, d), rng.uniform(0.01, 4.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-10)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 24), st.integers(0, 2 ** 31 - 1))
def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances(d, seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    sigma1, sigma2 = _random_covariance(rng, d), _random_covariance(rng, d)
    expected = _frechet_with_scipy_sqrtm(mu1, sigma1, mu2, sigma2)
    assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
        expected, rel=1e-7, abs=1e-9)


def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(64), _random_covariance(rng, 64)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-9 * np.trace(sigma)
    # Rank-deficient covariances (fewer samples than dimensions) stay finite and ≈ 0 too.
    singular = _random_covariance(rng, 64, rank=10)
    assert 0.0 <= metrics.frechet_distance(mu, singular, mu, singular) < 1e-9 * 64


def test_frechet_distance_from_samples_converges_to_the_analytic_value():
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    sigma1, sigma2 = _random_covariance(rng, d), _random_covariance(rng, d)
    analytic = _frechet_with_scipy_sqrtm(mu1, sigma1, mu2, sigma2)
    x = rng.multivariate_normal(mu1, sigma1, n)
    y = rng.multivariate_normal(mu2, sigma2, n)
    assert metrics.frechet_distance_from_features(x, y) == pytest.approx(analytic, rel=0.02)
    mu, sigma = metrics.feature_statistics(x)
    np.testing.assert_allclose(sigma, np.cov(x.T), rtol=1e-12)


@pytest.mark.parametrize("args, match", [
    ((np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)), "expected mu"),
    ((np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)), "expected mu"),
    ((np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2)), "sigma1 must be finite"),
])
def test_frechet_distance_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        metrics.frechet_distance(*args)


# ---------------------------------------------------------------------------------------
# KID


def _mmd2_unbiased_loops(x, y):
    """Bińkowski et al.'s unbiased MMD² written as plain double loops."""
    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / len(a) + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.integers(1, 5), st.integers(0, 2 ** 31 - 1))
def test_mmd2_unbiased_matches_the_loop(n, m, d, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d)) + 0.3
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(
        _mmd2_unbiased_loops(x.tolist(), y.tolist()), rel=1e-10, abs=1e-12)


def test_kid_with_whole_sets_is_the_single_estimate():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 3))
    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=3, subset_size=50)
    assert mean == pytest.approx(_mmd2_unbiased_loops(x.tolist(), y.tolist()), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole (permuted) set


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((800, 32)), rng.standard_normal((800, 32))
    same_mean, same_std = metrics.kernel_inception_distance(x, y, num_subsets=20,
                                                            subset_size=400)
    shift_mean, shift_std = metrics.kernel_inception_distance(x, y + 0.3, num_subsets=20,
                                                              subset_size=400)
    assert abs(same_mean) < 0.005
    assert shift_mean > 0.05 and shift_mean > 10 * shift_std


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein distance


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2 ** 31 - 1))
def test_sliced_wasserstein_in_one_dimension_is_scipy_w1(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 1))
    b = rng.exponential(2.0, (n, 1))
    # In 1-D every unit direction is ±1, and W1 is symmetric under a common sign flip.
    got = metrics.sliced_wasserstein(a, b, seed, num_repeats=2, num_directions=4)
    assert got == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-5)


def test_sliced_wasserstein_of_a_shifted_planar_set():
    # W1 between a set and its translate by s along θ is |θ·s|; averaged over uniform unit
    # directions in the plane, E|cos φ|·‖s‖ = (2/π)‖s‖.
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2000, 2))
    shift = np.array([3.0, 4.0])
    got = metrics.sliced_wasserstein(a, a + shift, 0, num_repeats=8, num_directions=512)
    assert got == pytest.approx(2 / math.pi * 5.0, rel=0.03)
    assert metrics.sliced_wasserstein(a, a, 0) == 0.0


_GAUSSIAN_5X5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _scipy_pyr_down(images):
    blurred = scipy.ndimage.convolve(images, _GAUSSIAN_5X5[None, :, :, None], mode="mirror")
    return blurred[:, ::2, ::2]


def _scipy_pyr_up(images):
    n, h, w, c = images.shape
    upsampled = np.zeros((n, 2 * h, 2 * w, c), images.dtype)
    upsampled[:, ::2, ::2] = images
    return scipy.ndimage.convolve(upsampled, 4 * _GAUSSIAN_5X5[None, :, :, None], mode="mirror")


def test_pyramid_steps_match_scipy_mirror_convolution():
    images = np.random.default_rng(5).standard_normal((2, 16, 16, 3))
    np.testing.assert_allclose(metrics.pyramid_down(images), _scipy_pyr_down(images),
                               atol=1e-5)
    small = images[:, :8, :8]
    np.testing.assert_allclose(metrics.pyramid_up(small), _scipy_pyr_up(small), atol=1e-5)


@pytest.mark.parametrize("shape, num_levels", [((3, 64, 64, 3), 3), ((2, 32, 16, 1), 2),
                                               ((1, 16, 16, 3), 1)])
def test_laplacian_pyramid_reconstructs_exactly(shape, num_levels):
    images = np.random.default_rng(6).uniform(-1, 1, shape).astype(np.float32)
    levels = jax.jit(metrics.laplacian_pyramid, static_argnums=1)(images, num_levels)
    assert [level.shape[1] for level in levels] == [shape[1] >> i for i in range(num_levels)]
    np.testing.assert_allclose(metrics.reconstruct_laplacian_pyramid(levels), images,
                               atol=2e-6)


def _textures(n, resolution, seed):
    """Smooth random colour fields plus pixel noise, in [−1, 1]: a stand-in image set."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, resolution // 8, resolution // 8, 3))
    smooth = np.asarray(jax.image.resize(coarse, (n, resolution, resolution, 3), "bicubic"))
    return np.tanh(0.6 * smooth + 0.3 * rng.standard_normal(smooth.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def texture_sets():
    return _textures(48, 32, seed=7), _textures(48, 32, seed=8)


def test_swd_of_one_distribution_is_small_and_a_blur_shows_in_the_fine_level(texture_sets):
    real, other = texture_sets
    blurred = scipy.ndimage.gaussian_filter(other, sigma=(0, 1, 1, 0))
    same = metrics.sliced_wasserstein_distance(real, other, key=0)
    blur = metrics.sliced_wasserstein_distance(real, blurred, key=0)
    assert list(same) == ["swd_32", "swd_16", "swd_avg"]
    assert same["swd_avg"] == pytest.approx((same["swd_32"] + same["swd_16"]) / 2)
    # A σ = 1 blur removes the finest band's detail but leaves the 16×16 Gaussian level.
    assert blur["swd_32"] > 2.5 * same["swd_32"]
    assert blur["swd_16"] == pytest.approx(same["swd_16"], rel=0.15)
    assert blur["swd_avg"] > 1.3 * same["swd_avg"]
    # Identical sets: only the random descriptor positions differ, so what remains is the
    # sampling floor of 48 × 128 descriptors (PGGAN uses 16384 × 128).
    identical = metrics.sliced_wasserstein_distance(real, real, key=0)
    assert identical["swd_16"] < 0.5 * same["swd_16"]
    assert identical["swd_avg"] < 0.5 * blur["swd_avg"]


def test_swd_normalisation_per_set_ignores_a_colour_shift_and_union_sees_it(texture_sets):
    real, other = texture_sets
    shifted = 0.5 * other + 0.3  # per-channel affine: standardising per set undoes it
    per_set = metrics.sliced_wasserstein_distance(real, shifted, key=1)["swd_avg"]
    per_set_same = metrics.sliced_wasserstein_distance(real, other, key=1)["swd_avg"]
    union = metrics.sliced_wasserstein_distance(real, shifted, key=1,
                                                normalisation="union")["swd_avg"]
    union_same = metrics.sliced_wasserstein_distance(real, other, key=1,
                                                     normalisation="union")["swd_avg"]
    assert per_set == pytest.approx(per_set_same, rel=1e-3)
    assert union > 10 * union_same


def test_swd_is_the_same_for_uint8_and_float_images(texture_sets):
    real, other = texture_sets
    real_u8 = np.round((real + 1) * 127.5).astype(np.uint8)
    other_u8 = np.round((other + 1) * 127.5).astype(np.uint8)
    from_u8 = metrics.sliced_wasserstein_distance(real_u8, other_u8, key=2)
    from_float = metrics.sliced_wasserstein_distance(real_u8 / 127.5 - 1, other_u8 / 127.5 - 1,
                                                     key=2)
    for name in from_u8:
        assert from_u8[name] == pytest.approx(from_float[name], rel=1e-4)


def test_swd_levels_and_descriptor_counts():
    assert metrics.swd_resolutions(16) == [16]
    assert metrics.swd_resolutions(128) == [128, 64, 32, 16]
    for resolution in (16, 32, 64, 256):
        assert len(metrics.swd_resolutions(resolution)) == math.log2(resolution / 16) + 1
    images = _textures(5, 64, seed=9)
    levels = metrics.swd_descriptors(images, 0, per_image=16, batch_size=2)
    assert [level.shape for level in levels] == [(80, 7, 7, 3)] * 3
    result = metrics.sliced_wasserstein_distance(images, images[:3], key=0, per_image=16,
                                                 num_repeats=1, batch_size=2)
    assert list(result) == ["swd_64", "swd_32", "swd_16", "swd_avg"]


def test_swd_descriptors_are_patches_of_the_pyramid():
    images = _textures(2, 32, seed=10)
    levels = metrics.swd_descriptors(images, 3, per_image=64)
    pyramid = [np.asarray(level) for level in metrics.laplacian_pyramid(images, 2)]
    for descriptors, level in zip(levels, pyramid):
        for index in (0, 63, 64, 127):
            image = level[index // 64]
            windows = np.lib.stride_tricks.sliding_window_view(image, (7, 7), axis=(0, 1))
            found = np.all(np.abs(windows - descriptors[index].transpose(2, 0, 1)) < 1e-6,
                           axis=(2, 3, 4))
            assert found.any()


# ---------------------------------------------------------------------------------------
# Diversity and nearest-label agreement


def _constant_images(values, size=32):
    return np.stack([np.full((size, size, 3), v, np.float32) for v in values])


def test_pooled_pixels_are_block_means():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    pooled = metrics.pooled_pixels(images, 16).reshape(2, 16, 16, 3)
    by_loop = np.array([[[images[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(0, 1))
                          for j in range(16)] for i in range(16)] for n in range(2)])
    np.testing.assert_allclose(pooled, by_loop, atol=1e-6)
    with pytest.raises(ValueError, match="must divide"):
        metrics.pooled_pixels(np.zeros((1, 24, 24, 3), np.float32), 16)


def test_mean_pairwise_distance_of_constant_images_is_hand_computed():
    # Pairs (0, 0.5), (0, 1), (0.5, 1): RMS distances 0.5, 1, 0.5.
    assert metrics.mean_pairwise_distance(_constant_images([0.0, 0.5, 1.0])) == (
        pytest.approx(2 / 3))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mean_pairwise_distance(_constant_images([0.0]))


def test_diversity_ratio_is_one_for_the_data_and_zero_for_a_collapsed_set():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (40, 32, 32, 3)).astype(np.float32)
    assert metrics.diversity_ratio(real, real) == pytest.approx(1.0)
    collapsed = np.repeat(real[:1], 40, axis=0)
    assert metrics.diversity_ratio(real, collapsed) == pytest.approx(0.0, abs=1e-6)
    # Two modes only: about half the pairs are at distance 0.
    two_modes = np.concatenate([np.repeat(real[:1], 20, 0), np.repeat(real[1:2], 20, 0)])
    assert 0.3 < metrics.diversity_ratio(real, two_modes) < 0.7


def test_nearest_label_agreement_by_hand():
    references = _constant_images([-1.0, -0.9, 0.9, 1.0])
    reference_labels = np.array([0, 0, 1, 1])
    queries = _constant_images([-0.95, 0.95, 0.8])
    # Nearest labels 0, 1, 1 against the queries' 0, 0, 1: two of three agree.
    result = metrics.nearest_label_agreement(queries, np.array([0, 0, 1]), references,
                                             reference_labels)
    assert result == {"agreement": pytest.approx(2 / 3), "chance": pytest.approx(0.5)}
    # Leave-one-out on the references themselves: each one's neighbour is its own class.
    own = metrics.nearest_label_agreement(references, reference_labels, references,
                                          reference_labels)
    assert own["agreement"] == 1.0
    # Without leave-one-out (a copy, not the same object) every image finds itself.
    assert metrics.nearest_label_agreement(references.copy(), np.array([1, 1, 0, 0]),
                                           references, reference_labels)["agreement"] == 0.0
    with pytest.raises(ValueError, match="one label"):
        metrics.nearest_label_agreement(queries, np.array([0, 1]), references,
                                        reference_labels)


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 48, 48, 3), np.float32), "power of two"),
    (np.zeros((2, 8, 8, 3), np.float32), "power of two"),
    (np.full((2, 16, 16, 3), 255.0, np.float32), r"\[-1, 1\]"),
    (np.zeros((16, 16, 3), np.float32), "NHWC"),
    (np.zeros((2, 16, 16, 3), np.int32), "uint8 or floating"),
])
def test_swd_bad_input(images, match):
    with pytest.raises(ValueError, match=match):
        metrics.sliced_wasserstein_distance(images, images)


# ---------------------------------------------------------------------------------------
# Feature extractors, FID and KID over images


def test_random_conv_features_are_deterministic_by_seed():
    images = _textures(6, 32, seed=11)
    first, again = metrics.RandomConvFeatures(seed=0), metrics.RandomConvFeatures(seed=0)
    features = first(images)
    assert features.shape == (6, 480) and features.dtype == np.float32
    assert first.feature_dim == 480
    np.testing.assert_array_equal(features, again(images))
    assert not np.allclose(features, metrics.RandomConvFeatures(seed=1)(images))
    assert metrics.RandomConvFeatures(channels=(8, 16))(images).shape == (6, 24)


def test_random_conv_features_match_torch_convolutions():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    extractor = metrics.RandomConvFeatures(seed=4, channels=(8, 16, 32))
    images = _textures(3, 32, seed=12)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
    pooled = []
    for kernel, bias in extractor.params:
        weight = torch.from_numpy(np.asarray(kernel, np.float64)).permute(3, 2, 0, 1)
        # TF "SAME" with stride 2 on an even size pads one pixel, at the bottom/right.
        x = functional.conv2d(functional.pad(x, (0, 1, 0, 1)), weight, stride=2)
        x = functional.leaky_relu(x + torch.from_numpy(np.asarray(bias, np.float64))[:, None,
                                                                                      None], 0.2)
        pooled.append(x.mean(dim=(2, 3)))
    expected = torch.cat(pooled, dim=1).numpy()
    np.testing.assert_allclose(extractor(images), expected, rtol=1e-4, atol=1e-5)


def test_fid_and_kid_over_images():
    extractor = metrics.RandomConvFeatures(seed=0)
    real, other = _textures(40, 32, seed=13), _textures(40, 32, seed=14)
    features = extractor(real)
    # Batching (7 does not divide 40) gives the features of one big batch.
    np.testing.assert_allclose(metrics.extract_features(extractor, real, batch_size=7),
                               features, rtol=1e-5, atol=1e-6)
    assert metrics.fid(extractor, real, real, batch_size=16) < 1e-6
    shifted = other * 0.6 + 0.35  # the other set with its colours squeezed and shifted
    assert metrics.fid(extractor, real, shifted) > 3 * metrics.fid(extractor, real, other)
    kid_same, _ = metrics.kid(extractor, real, other, num_subsets=5)
    kid_shift, _ = metrics.kid(extractor, real, shifted, num_subsets=5)
    assert kid_shift > 0.05 and kid_shift > 20 * abs(kid_same)


def test_extract_features_checks_the_extractor_output():
    with pytest.raises(ValueError, match="expected"):
        metrics.extract_features(lambda images: np.zeros((1, 4)), np.zeros((3, 16, 16, 3)))


# ---------------------------------------------------------------------------------------
# Inception-v3: the name-mapping table and the loader

# (name, shape) pairs read off torchvision's printed `Inception3` (see its layer listing),
# independent of the code under test.
_TORCHVISION_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6c.branch7x7dbl_5.conv.weight": (192, 160, 1, 7),
    "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch1x1.conv.weight": (320, 2048, 1, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.running_var": (192,),
}


@pytest.fixture(scope="module")
def shape_tree():
    return inception.variable_shapes("fid")


def _synthetic_variables(shape_tree, seed=0):
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(shape_tree)
    return traverse_util.unflatten_dict({
        path: (rng.uniform(0.5, 1.5, leaf.shape) if path[-1] == "var"
               else rng.standard_normal(leaf.shape)).astype(np.float32)
        for path, leaf in flat.items()})


def test_name_table_covers_every_flax_variable_exactly_once(shape_tree):
    table = inception.name_table()
    targets = [(collection,) + path for collection, path, _ in table.values()]
    assert len(table) == 94 * 5 == len(targets) == len(set(targets))
    assert set(targets) == set(traverse_util.flatten_dict(shape_tree))


def test_mapped_shapes_are_torchvisions(shape_tree):
    state_dict = inception.variables_to_state_dict(_synthetic_variables(shape_tree))
    for name, shape in _TORCHVISION_SHAPES.items():
        assert state_dict[name].shape == shape, name


def test_state_dict_round_trip_is_the_identity(shape_tree):
    variables = _synthetic_variables(shape_tree, seed=1)
    state_dict = inception.variables_to_state_dict(variables)
    state_dict.update({"fc.weight": np.zeros((1008, 2048)), "fc.bias": np.zeros(1008),
                       "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(5),
                       "AuxLogits.fc.bias": np.zeros(1000)})
    loaded = inception.state_dict_to_variables(state_dict, "fid")
    flat_loaded = traverse_util.flatten_dict(loaded)
    flat_original = traverse_util.flatten_dict(variables)
    assert flat_loaded.keys() == flat_original.keys()
    for path, value in flat_original.items():
        np.testing.assert_array_equal(flat_loaded[path], value)


def test_missing_extra_and_misshapen_parameters_are_named(shape_tree):
    state_dict = inception.variables_to_state_dict(_synthetic_variables(shape_tree))
    missing = dict(state_dict)
    del missing["Mixed_6c.branch7x7dbl_3.bn.running_mean"]
    with pytest.raises(inception.WeightsError, match=r"weights\.npz.*1 missing: "
                       r"Mixed_6c\.branch7x7dbl_3\.bn\.running_mean"):
        inception.state_dict_to_variables(missing, source="weights.npz")
    extra = dict(state_dict, **{"Mixed_5b.branch9x9.conv.weight": np.zeros(3)})
    with pytest.raises(inception.WeightsError,
                       match=r"1 unexpected: Mixed_5b\.branch9x9\.conv\.weight"):
        inception.state_dict_to_variables(extra)
    misshapen = dict(state_dict, **{"Mixed_7b.branch1x1.conv.weight": np.zeros((320, 1280))})
    with pytest.raises(inception.WeightsError, match=r"Mixed_7b\.branch1x1\.conv\.weight"):
        inception.state_dict_to_variables(misshapen)


def test_weights_files_load_and_errors_name_the_file(shape_tree, tmp_path):
    state_dict = inception.variables_to_state_dict(_synthetic_variables(shape_tree, seed=2))
    np.savez(tmp_path / "fid.npz", **state_dict, **{"fc.weight": np.zeros((1008, 2048))})
    extractor = inception.InceptionFeatures(tmp_path / "fid.npz", input_size=75)
    assert extractor.variant == "fid"
    np.testing.assert_array_equal(extractor.variables["params"]["Mixed_6a"]["branch3x3"]["conv"]
                                  ["kernel"], state_dict["Mixed_6a.branch3x3.conv.weight"]
                                  .transpose(2, 3, 1, 0))
    np.savez(tmp_path / "torchvision.npz", **state_dict, **{"fc.weight": np.zeros((1000, 2))})
    assert inception.detect_variant(inception.load_state_dict_file(
        tmp_path / "torchvision.npz")) == "torchvision"
    del state_dict["Conv2d_2a_3x3.conv.weight"]
    np.savez(tmp_path / "broken.npz", **state_dict)
    with pytest.raises(inception.WeightsError, match=r"broken\.npz.*Conv2d_2a_3x3\.conv\.weight"):
        inception.InceptionFeatures(tmp_path / "broken.npz", variant="fid")
    with pytest.raises(inception.WeightsError, match=r"broken\.npz.*no fc\.weight"):
        inception.InceptionFeatures(tmp_path / "broken.npz")
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        inception.InceptionFeatures(tmp_path / "absent.npz")
    (tmp_path / "weights.h5").touch()
    with pytest.raises(ValueError, match=r"weights\.h5: unsupported weights format"):
        inception.load_state_dict_file(tmp_path / "weights.h5")


def test_pth_files_load_through_torch(shape_tree, tmp_path):
    torch = pytest.importorskip("torch")
    state_dict = inception.variables_to_state_dict(_synthetic_variables(shape_tree, seed=3))
    torch.save({name: torch.from_numpy(value) for name, value in state_dict.items()},
               tmp_path / "weights.pth")
    loaded = inception.load_state_dict_file(tmp_path / "weights.pth")
    assert loaded.keys() == state_dict.keys()
    np.testing.assert_array_equal(loaded["Mixed_7c.branch_pool.conv.weight"],
                                  state_dict["Mixed_7c.branch_pool.conv.weight"])


def test_safetensors_files_load(shape_tree, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    state_dict = inception.variables_to_state_dict(_synthetic_variables(shape_tree, seed=4))
    safetensors_numpy.save_file(state_dict, str(tmp_path / "weights.safetensors"))
    loaded = inception.load_state_dict_file(tmp_path / "weights.safetensors")
    np.testing.assert_array_equal(loaded["Conv2d_1a_3x3.conv.weight"],
                                  state_dict["Conv2d_1a_3x3.conv.weight"])


# ---------------------------------------------------------------------------------------
# Inception-v3 against a torch reference with the same (random) weights


def _torch_inception(torch, variant):
    """Inception-v3's pool3 trunk in plain torch, following torchvision's module listing
    (names, channels, kernels, strides, paddings) and pytorch-fid's FID patches."""
    nn, functional = torch.nn, torch.nn.functional
    exclude_pad = variant == "fid"

    class Basic(nn.Module):
        def __init__(self, cin, cout, **kwargs):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
            self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=None)

        def forward(self, x):
            return functional.relu(self.bn(self.conv(x)))

    def avg(x):
        return functional.avg_pool2d(x, 3, stride=1, padding=1,
                                     count_include_pad=not exclude_pad)

    class A(nn.Module):
        def __init__(self, cin, pool_features):
            super().__init__()
            self.branch1x1 = Basic(cin, 64, kernel_size=1)
            self.branch5x5_1 = Basic(cin, 48, kernel_size=1)
            self.branch5x5_2 = Basic(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = Basic(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = Basic(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = Basic(96, 96, kernel_size=3, padding=1)
            self.branch_pool = Basic(cin, pool_features, kernel_size=1)

        def forward(self, x):
            return torch.cat([
                self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(avg(x))], 1)

    class B(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = Basic(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = Basic(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = Basic(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = Basic(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            return torch.cat([
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                functional.max_pool2d(x, 3, stride=2)], 1)

    class C(nn.Module):
        def __init__(self, cin, c7):
            super().__init__()
            self.branch1x1 = Basic(cin, 192, kernel_size=1)
            self.branch7x7_1 = Basic(cin, c7, kernel_size=1)
            self.branch7x7_2 = Basic(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = Basic(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = Basic(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = Basic(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = Basic(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = Basic(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = Basic(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = Basic(cin, 192, kernel_size=1)

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                d = layer(d)
            return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg(x))], 1)

    class D(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1 = Basic(cin, 192, kernel_size=1)
            self.branch3x3_2 = Basic(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = Basic(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = Basic(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = Basic(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = Basic(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            b7 = x
            for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                          self.branch7x7x3_4):
                b7 = layer(b7)
            return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                              functional.max_pool2d(x, 3, stride=2)], 1)

    class E(nn.Module):
        def __init__(self, cin, max_pool):
            super().__init__()
            self.max_pool = max_pool
            self.branch1x1 = Basic(cin, 320, kernel_size=1)
            self.branch3x3_1 = Basic(cin, 384, kernel_size=1)
            self.branch3x3_2a = Basic(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = Basic(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = Basic(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = Basic(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = Basic(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = Basic(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = Basic(cin, 192, kernel_size=1)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            pooled = (functional.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool
                      else avg(x))
            return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                              self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                              self.branch_pool(pooled)], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = Basic(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = Basic(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = Basic(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = Basic(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = Basic(80, 192, kernel_size=3)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
            self.Mixed_6a = B(288)
            self.Mixed_6b, self.Mixed_6c = C(768, 128), C(768, 160)
            self.Mixed_6d, self.Mixed_6e = C(768, 160), C(768, 192)
            self.Mixed_7a = D(768)
            self.Mixed_7b, self.Mixed_7c = E(1280, False), E(2048, exclude_pad)

        def forward(self, x):
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = functional.max_pool2d(x, 3, stride=2)
            x = functional.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
            for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                          self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                          self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
                x = block(x)
            return x.mean(dim=(2, 3))

    return Net()


@pytest.mark.parametrize("variant", [
    "fid", "torchvision"])
def test_flax_inception_matches_torch_with_copied_weights(variant):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_inception(torch, variant)
    images = np.tanh(np.random.default_rng(15).standard_normal((3, 75, 75, 3))).astype(np.float32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():  # variance-preserving random weights keep activations O(1)
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
        net.eval()
        expected = net(x).numpy()
    state_dict = {name: value.numpy() for name, value in net.state_dict().items()}
    assert len(state_dict) == 94 * 6  # conv weight + 4 BN tensors + num_batches_tracked
    variables = inception.state_dict_to_variables(state_dict, variant)
    got = np.asarray(jax.jit(inception.InceptionV3Pool3(variant).apply)(variables, images))
    assert got.shape == (3, 2048)
    assert 0.1 < np.abs(expected).max() < 100
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_bilinear_resize_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(16).standard_normal((2, 40, 40, 3)).astype(np.float32)
    got = inception.resize_for_inception(images, 299)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
        align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
