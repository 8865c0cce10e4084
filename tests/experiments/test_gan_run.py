"""The GAN experiment (docs/wgan_div.md): one train step per loss × penalty × architecture cell
(compare_gan style), the D:G ratio, the EMA, the image pipeline, config errors, and
end-to-end runs through launch.py on the embedded mixture and on a folder of images."""

import json
import pathlib

import jax
import numpy as np
import optax
import PIL.Image
import pytest

import launch
from experiments import configs, data, gan, trainer
from experiments.configs import ConfigError
from experiments.gan import config as config_lib
from experiments.gan import input_pipeline, mixture, plots
from experiments.gan import train as gan_train
from kernels import gan_losses

BATCH = 8


def _config(variant: str = "wgan_div", *overrides: str):
    """A preset with tiny nets: MLP 2 × 16 on the ring, or a 32-px DCGAN of width 4."""
    config = gan.get_config(variant)
    configs.apply_overrides(config, [
        "model.mlp.width=16", "model.mlp.num_hidden=2", "data.resolution=32",
        "model.dcgan.base_channels=4", f"batch_size={BATCH}", *overrides])
    return config


def _parts(config):
    nets = gan_train.build_nets(config)
    optimizers = gan_train.make_optimizers(config)
    step = gan_train.make_train_step(
        nets, optimizers, gan_losses.get_gan_loss(config.loss),
        gan_train.make_penalty(config.penalty), critic_steps=config.steps.critic,
        generator_steps=config.steps.generator)
    init = gan_train.make_init_state(nets, optimizers, config.batch_size)
    return nets, step, init


def _real_batch(config, nets, seed=0):
    count = config.steps.critic * config.batch_size
    rng = np.random.default_rng(seed)
    if config.data.kind == "mixture":
        return {"real": mixture.sample(mixture.mixture("ring"), rng, count)}
    return {"real": rng.integers(0, 256, (count, *nets.sample_shape), dtype=np.uint8)}


# Compiling is most of these tests' cost (the DCGAN init alone compiles for ~5 s on CPU):
# initial states are shared between cells with the same nets, and each cell's step result is
# kept for the tests that inspect the same configuration.
_INITIAL_STATES: dict = {}
_STEP_RESULTS: dict = {}


def _one_step(config):
    """(state before as numpy, state after, metrics) of one jitted step."""
    key = configs.to_json(config)
    if key not in _STEP_RESULTS:
        nets, step, init = _parts(config)
        init_key = (repr(nets), config.batch_size)
        if init_key not in _INITIAL_STATES:
            _INITIAL_STATES[init_key] = jax.jit(init)(jax.random.PRNGKey(0))
        state = _INITIAL_STATES[init_key]
        after, metrics = jax.jit(step)(state, _real_batch(config, nets), jax.random.PRNGKey(1))
        _STEP_RESULTS[key] = (jax.tree.map(np.array, state), jax.tree.map(np.asarray, after),
                              jax.device_get(metrics))
    return _STEP_RESULTS[key]


def _kernels(params):
    return {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if "kernel" in jax.tree_util.keystr(path)}


def _assert_every_kernel_moved(before, after):
    before, after = _kernels(before), _kernels(after)
    assert before and before.keys() == after.keys()
    for name in before:
        assert not np.array_equal(before[name], after[name]), name


# ----------------------------------------------------------------------------------------
# The compare_gan grid: loss × penalty × architecture, one step per cell.

ARCHITECTURES = {
    "mlp": (),
    "dcgan32": ("data.kind=images", "data.path=unused"),
}
# The unmarked cells: every penalty and every loss on the MLP, the seed's WGAN-div and the
# DCGAN preset's cell on the convolutional nets; the full product runs under `slow`.
QUICK_CELLS = {("wasserstein", penalty, "mlp") for penalty in config_lib.PENALTIES} | {
    (loss, "wgan_div", "mlp") for loss in tuple(gan_losses.GAN_LOSSES)} | {
    ("wasserstein", "wgan_div", "dcgan32"), ("non_saturating", "none", "dcgan32")}
CELLS = [pytest.param(loss, penalty, architecture, marks=() if (
    loss, penalty, architecture) in QUICK_CELLS else pytest.mark.slow)
    for architecture in ARCHITECTURES for penalty in config_lib.PENALTIES
    for loss in tuple(gan_losses.GAN_LOSSES)]


@pytest.mark.parametrize("loss, penalty, architecture", CELLS)
def test_one_step_per_cell_is_finite_and_trains_both_nets(loss, penalty, architecture):
    config = _config("wgan_div", f"loss={loss}", f"penalty.kind={penalty}",
                     *ARCHITECTURES[architecture])
    before, after, metrics = _one_step(config)
    assert set(metrics) >= {"loss", "critic_loss", "generator_loss", "penalty", "w_distance",
                            "critic_grad_norm", "generator_grad_norm"}
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    assert metrics["loss"] == metrics["critic_loss"]
    if penalty == "none":
        assert metrics["penalty"] == 0.0
    else:
        assert metrics["penalty"] > 0.0
    if loss == "wasserstein":  # critic loss = E[T(fake)] − E[T(real)] + penalty
        np.testing.assert_allclose(metrics["critic_loss"],
                                   -metrics["w_distance"] + metrics["penalty"], rtol=1e-5,
                                   atol=1e-5)
    _assert_every_kernel_moved(before["critic"]["params"], after["critic"]["params"])
    _assert_every_kernel_moved(before["generator"]["params"], after["generator"]["params"])
    assert int(after["step"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("preset", config_lib.PRESETS)
def test_every_preset_takes_a_finite_step_on_images(preset):
    before, after, metrics = _one_step(_config(preset, "data.kind=images", "data.path=unused"))
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    _assert_every_kernel_moved(before["critic"]["params"], after["critic"]["params"])
    _assert_every_kernel_moved(before["generator"]["params"], after["generator"]["params"])


def _stats_moved(before, after) -> list[bool]:
    return jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                        before["critic"]["collections"],
                                        after["critic"]["collections"]))


def test_spectral_norm_state_is_updated_by_the_step():
    before, after, metrics = _one_step(_config("wgan_sn"))
    assert all(np.isfinite(value) for value in metrics.values())
    moved = _stats_moved(before, after)
    assert moved and all(moved)  # every layer's u and sigma


def test_batch_norm_moving_averages_are_updated_by_the_critic_and_generator_steps():
    before, after, _ = _one_step(_config("wgan_div", "loss=wasserstein",
                                         "penalty.kind=wgan_div", *ARCHITECTURES["dcgan32"]))
    for net in ("critic", "generator"):
        means = [(jax.tree_util.keystr(p), leaf) for p, leaf in
                 jax.tree_util.tree_leaves_with_path(after[net]["collections"])
                 if "mean" in jax.tree_util.keystr(p)]
        old = dict((jax.tree_util.keystr(p), leaf) for p, leaf in
                   jax.tree_util.tree_leaves_with_path(before[net]["collections"]))
        assert means
        for name, value in means:
            assert not np.array_equal(value, old[name]), (net, name)


# ----------------------------------------------------------------------------------------
# D:G ratio and EMA.


def _adam_count(opt_state) -> int:
    return int(optax.tree.get(opt_state, "count"))


@pytest.mark.parametrize("variant, overrides, critic_updates, generator_updates", [
    ("wgan_div", ("steps.critic=3",), 3, 1),
    ("dcgan", (), 1, 2),                       # docs/wgan_div.md §4.1: 1 D : 2 G
    ("wgan_gp", (), 5, 1),                     # docs/wgan_div.md §4.1: 5 D : 1 G
    ("wgan_div_paper", (), 4, 1),              # docs/wgan_div.md §4.1: 4 per G step
])
def test_one_step_runs_the_configured_number_of_updates(variant, overrides, critic_updates,
                                                        generator_updates):
    config = _config(variant, *overrides)
    assert (config.steps.critic, config.steps.generator) == (critic_updates,
                                                             generator_updates)
    _, after, _ = _one_step(config)
    assert _adam_count(after["critic"]["opt_state"]) == critic_updates
    assert _adam_count(after["generator"]["opt_state"]) == generator_updates


def test_a_batch_that_does_not_split_into_the_critic_steps_is_refused():
    config = _config("wgan_div", "steps.critic=3")
    nets, step, init = _parts(config)
    batch = {"real": np.zeros((3 * BATCH + 1, 2), np.float32)}
    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="not a multiple of the 3 critic steps"):
        jax.eval_shape(step, state, batch, jax.random.PRNGKey(1))


def test_the_trainer_keeps_the_ema_of_the_generator_and_evaluates_with_it(tmp_path):
    """With trainer.ema_decay on, the checkpoint holds the EMA of generator.params, and
    the live generator is scored as live_* on mixtures."""
    workdir = tmp_path / "run"
    assert launch.main(["gan:smoke", "--workdir", str(workdir), "--config.trainer.num_steps=4",
                        "--config.trainer.eval_every=4", "--config.trainer.ema_decay=0.5"]) == 0
    nets, _, init = _parts(gan.get_config("smoke"))
    template = jax.eval_shape(init, jax.random.PRNGKey(0))
    ema = trainer.load_state(workdir, template, params_path=("generator", "params"))
    live = trainer.load_state(workdir, template, ema=False,
                              params_path=("generator", "params"))
    for e, p in zip(jax.tree.leaves(ema["generator"]["params"]),
                    jax.tree.leaves(live["generator"]["params"])):
        assert e.shape == p.shape and not np.array_equal(e, p)
    final = json.loads((workdir / "summary.json").read_text())["final"]
    assert {"modes_covered", "live_modes_covered", "high_quality", "live_high_quality"} <= set(
        final)


# ----------------------------------------------------------------------------------------
# End to end through launch.py.


def _metric_lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_writes_samples_curves_and_metrics(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert launch.main(["gan:smoke", "--workdir", str(workdir)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(summary)[:2] == ["modes_covered", "high_quality"]
    assert 0 <= summary["modes_covered"] <= 8 and 0 <= summary["high_quality"] <= 1
    for name in ("samples/step_0000010.png", "samples/step_0000020.png",
                 "training_curves.png", "summary.json", "config.json"):
        assert (workdir / name).is_file(), name
    with PIL.Image.open(workdir / "samples" / "step_0000020.png") as image:
        assert image.format == "PNG" and min(image.size) >= 200
    lines = _metric_lines(workdir)
    train_lines = [line for line in lines if line["split"] == "train"]
    assert [line["step"] for line in train_lines] == [5, 10, 15, 20]
    assert {"critic_loss", "generator_loss", "penalty", "w_distance",
            "critic_grad_norm"} <= set(train_lines[0])
    evals = [line for line in lines if line["split"] == "eval"]
    assert [line["step"] for line in evals] == [10, 20]
    assert evals[-1]["modes_covered"] == summary["modes_covered"]


@pytest.mark.slow
def test_a_resumed_smoke_run_equals_an_uninterrupted_one(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert launch.main(["gan:smoke", "--workdir", str(straight),
                        "--config.trainer.num_steps=30"]) == 0
    assert launch.main(["gan:smoke", "--workdir", str(resumed)]) == 0
    assert launch.main(["gan:smoke", "--workdir", str(resumed),
                        "--config.trainer.num_steps=30"]) == 0
    final = [json.loads((path / "summary.json").read_text()) for path in (straight, resumed)]
    assert final[0] == final[1]
    losses = [[line["critic_loss"] for line in _metric_lines(path) if line["split"] == "train"
               and line["step"] > 20] for path in (straight, resumed)]
    assert losses[0] == losses[1]


def _write_faces(folder: pathlib.Path, count: int, size=(40, 36)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"{index:03d}.png")


@pytest.mark.slow
def test_image_run_writes_a_grid_progression_and_reports_the_swd(tmp_path, capsys):
    _write_faces(tmp_path / "faces", 24)
    workdir = tmp_path / "run"
    assert launch.main([
        "gan:smoke", "--workdir", str(workdir), "--config.data.kind=images",
        f"--config.data.path={tmp_path / 'faces'}", "--config.data.resolution=32",
        "--config.model.dcgan.base_channels=4", "--config.batch_size=4",
        "--config.data.num_eval_images=8", "--config.trainer.num_steps=4",
        "--config.trainer.eval_every=2", "--config.trainer.log_every=2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(summary)[0] == "swd_avg" and np.isfinite(summary["swd_avg"])
    assert {"swd_32", "swd_16"} <= set(summary)
    for step in (2, 4):
        with PIL.Image.open(workdir / "samples" / f"step_{step:07d}.png") as image:
            assert image.size == (8 * 32, 8 * 32)
    assert (workdir / "training_curves.png").is_file()
    assert len(list(workdir.glob("images_32px_*.npy"))) == 1  # the decoded cache


# ----------------------------------------------------------------------------------------
# Image pipeline.


def test_center_crop_keeps_the_middle_square_of_wide_and_tall_images():
    red, green = (255, 0, 0), (0, 255, 0)
    for width, height in ((60, 30), (30, 60)):
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[:] = green
        side = min(width, height)
        top, left = (height - side) // 2, (width - side) // 2
        pixels[top:top + side, left:left + side] = red
        out = input_pipeline.center_crop_resize(PIL.Image.fromarray(pixels), 32)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out.reshape(-1, 3), np.tile(red, (32 * 32, 1)))


def test_resize_is_antialiased():
    # A one-pixel checkerboard averages to mid-grey when shrunk 4×; nearest-neighbour
    # sampling would keep pure black and white.
    board = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)
    out = input_pipeline.center_crop_resize(PIL.Image.fromarray(board), 32)
    assert np.all(np.abs(out.astype(int) - 127.5) < 20)


def test_model_range_maps_bytes_to_minus_one_one():
    images = np.array([0, 1, 127, 128, 255], np.uint8)
    np.testing.assert_allclose(input_pipeline.to_model_range(images),
                               np.array([0, 1, 127, 128, 255]) / 255 * 2 - 1, atol=1e-6)
    assert input_pipeline.to_model_range(images).dtype == np.float32


def test_folder_loads_to_uint8_squares_and_is_cached(tmp_path, monkeypatch):
    _write_faces(tmp_path / "faces", 5)
    _write_faces(tmp_path / "faces" / "more", 2, size=(20, 50))
    images, skipped = input_pipeline.load_images(tmp_path / "faces", 32, cache_dir=tmp_path)
    assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8 and skipped == []
    float_images = input_pipeline.to_model_range(images)
    assert float_images.min() >= -1 and float_images.max() <= 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(data, "read_image_folder", no_decoding)
    cached, _ = input_pipeline.load_images(tmp_path / "faces", 32, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached, images)


def test_a_broken_image_is_named_or_skipped_and_counted(tmp_path):
    _write_faces(tmp_path / "faces", 3)
    (tmp_path / "faces" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(data.RecordError, match="broken.png"):
        input_pipeline.load_images(tmp_path / "faces", 32)
    images, skipped = input_pipeline.load_images(tmp_path / "faces", 32, skip_bad=True)
    assert len(images) == 3 and len(skipped) == 1 and "broken.png" in skipped[0]


def test_mixture_batches_are_a_resumable_pure_function_of_the_position():
    stream = input_pipeline.MixtureBatches(mixture.mixture("grid"), 32, seed=3)
    first = [next(stream)["real"] for _ in range(3)]
    again = input_pipeline.MixtureBatches(mixture.mixture("grid"), 32, seed=3)
    again.restore({"batch": 2})
    np.testing.assert_array_equal(next(again)["real"], first[2])
    assert first[0].shape == (32, 2) and not np.array_equal(first[0], first[1])


def test_image_grid_tiles_row_major():
    images = np.stack([np.full((2, 3, 1), value, np.uint8) for value in range(4)])
    grid = plots.image_grid(images, 2)[..., 0]
    np.testing.assert_array_equal(grid, [[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2)
    floats = plots.image_grid(np.full((1, 1, 1, 3), -1.0), 1)
    assert floats.dtype == np.uint8 and floats.max() == 0


# ----------------------------------------------------------------------------------------
# Bad configs fail before training starts.


@pytest.mark.parametrize("overrides, message", [
    (("data.kind=images", "data.path=x", "data.resolution=48"), "data.resolution=48"),
    (("data.kind=images", "data.path=x", "data.resolution=16"), "power of two >= 32"),
    (("penalty.p=1.0",), "p must be > 1"),
    (("penalty.k=0.0",), "k must be > 0"),
    (("penalty.k=-1.0",), "penalty.k=-1.0"),
    (("penalty.strategy=everywhere",), "penalty.strategy='everywhere'"),
    (("penalty.kind=clip",), "penalty.kind='clip'"),
    (("loss=least_squares",), "loss='least_squares'"),
    (("steps.critic=0",), "steps.critic=0"),
    (("data.mixture=spiral",), "data.mixture='spiral'"),
    (("data.kind=images",), "needs --config.data.path"),
    (("data.kind=images", "data.path=x", "model.dcgan.conv=cudnn"), "model.dcgan.conv='cudnn'"),
])
def test_bad_configs_are_refused_before_training(tmp_path, overrides, message):
    config = gan.get_config("smoke")
    configs.apply_overrides(config, list(overrides))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        gan.run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_empty_folder_is_refused_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    config = gan.get_config("smoke")
    configs.apply_overrides(config, ["data.kind=images", f"data.path={tmp_path / 'empty'}",
                                     "data.resolution=32"])
    with pytest.raises(data.RecordError, match="no image files"):
        gan.run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_too_few_images_for_one_step_are_refused(tmp_path):
    _write_faces(tmp_path / "faces", 6)
    config = gan.get_config("smoke")
    configs.apply_overrides(config, ["data.kind=images", f"data.path={tmp_path / 'faces'}",
                                     "data.resolution=32", "data.num_eval_images=2"])
    with pytest.raises(ConfigError, match="4 training images"):
        gan.run(config, tmp_path / "run")


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="wgan_div_paper"):
        gan.get_config("wgan")


def test_presets_hold_the_seed_settings():
    seed = gan.get_config("")
    assert (seed.loss, seed.penalty.kind, seed.penalty.k, seed.penalty.p,
            seed.penalty.strategy) == ("wasserstein", "wgan_div", 2.0, 6.0, "real_and_fake")
    assert (seed.optimizer.critic.learning_rate, seed.optimizer.critic.b1,
            seed.steps.critic, seed.steps.generator, seed.batch_size) == (2e-4, 0.5, 1, 1, 64)
    paper = gan.get_config("wgan_div_paper")
    assert (paper.penalty.k, paper.penalty.strategy, paper.steps.critic,
            paper.optimizer.generator.b1, paper.optimizer.generator.b2) == (
        10.0, "real_fake_interpolation", 4, 0.0, 0.9)
    dcgan_config = gan.get_config("dcgan")
    assert (dcgan_config.loss, dcgan_config.penalty.kind, dcgan_config.steps.generator,
            dcgan_config.model.dcgan.z_dim) == ("non_saturating", "none", 2, 100)
    assert gan.get_config("wgan_sn").model.mlp.spectral_norm


# ----------------------------------------------------------------------------------------
# The sweep's table rows.


def test_mixture_sweep_cells_cover_the_presets_the_grid_and_the_strategies_once_each():
    from experiments.gan import sweep

    cells = sweep.mixture_cells(["ring", "grid"], "ring")
    groups = [cell.group for cell in cells]
    assert groups.count("presets") == 2 * len(sweep.MIXTURE_PRESETS)
    assert groups.count("k × p") == len(sweep.K_VALUES) * len(sweep.P_VALUES) >= 6
    assert groups.count("r(x) strategy") == 6
    # The seed's WGAN-div on the ring is one run shared by three rows; all others differ.
    seed_rows = [cell for cell in cells if cell.slug == "wgan_div__data_mixture-ring"]
    assert {cell.group for cell in seed_rows} == {"presets", "k × p", "r(x) strategy"}
    assert len({cell.slug for cell in cells}) == len(cells) - 2
    for cell in cells:  # every cell is a valid config
        config = gan.get_config(cell.variant)
        configs.apply_overrides(config, list(cell.overrides))
        config_lib.validate(config)


def test_reference_rows_score_real_samples_at_the_gaussian_3_sigma_mass():
    from experiments.gan import sweep

    rows = dict(sweep.reference_rows(["ring"], seeds=range(2), num_points=4000))
    real = rows["real samples (ring)"]
    # P(‖x − μ‖ < 3σ) for a 2-D isotropic Gaussian is 1 − e^{−9/2} = 0.98889.
    for score in real:
        assert score["modes_covered"] == 8
        assert abs(score["high_quality"] - (1 - np.exp(-4.5))) < 0.01


def test_final_grids_are_copied_beside_the_table_and_linked_by_name(tmp_path):
    from experiments import sweep as sweep_lib
    from experiments.gan import sweep

    finished, unfinished = tmp_path / "runs" / "dcgan__bn-seed0", tmp_path / "runs" / "x-seed0"
    (finished / "samples").mkdir(parents=True)
    (finished / "samples" / "step_0000300.png").write_bytes(b"png bytes")
    rows = [sweep_lib.Row(labels={"trunk": "dcgan"}, summaries=[{}], workdirs=[finished]),
            sweep_lib.Row(labels={"trunk": "x"}, summaries=[{}], workdirs=[unfinished])]
    linked = sweep._with_final_grids(rows, 300, str(tmp_path / "results"), "arch")
    assert linked[0].labels == {"trunk": "dcgan",
                                "final grid": "![dcgan__bn-seed0](arch_dcgan__bn-seed0.png)"}
    assert (tmp_path / "results" / "arch_dcgan__bn-seed0.png").read_bytes() == b"png bytes"
    assert linked[1].labels["final grid"] == ""      # no grid: an empty cell, not an error
    assert rows[0].labels == {"trunk": "dcgan"}       # the input rows are left alone
