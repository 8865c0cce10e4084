"""The GAN architectures (docs/gan_architectures.md): one step per trunk × norm × loss cell,
O-GAN's stop-gradient step against its two-loss form, labelled data, and short runs of the
presets through launch.py."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

import launch
from experiments import configs, data, gan
from experiments.configs import ConfigError
from experiments.gan import config as config_lib
from experiments.gan import input_pipeline, ogan
from experiments.gan import train as gan_train
from kernels import conv
from models import gan_norms, gan_trunks

BATCH, NUM_CLASSES = 4, 3
OLIVETTI = pathlib.Path(__file__).resolve().parents[3] / "shared/data/gan_faces/olivetti"


def _config(trunk, norm, loss, *overrides):
    variant = "ogan" if loss == "ogan" else "wgan_div"
    config = gan.get_config(variant)
    labelled = ["data.labels=subfolders"] if norm in gan_norms.LABEL_NORMS else []
    configs.apply_overrides(config, [
        "data.kind=images", "data.path=unused", "data.resolution=32",
        "model.dcgan.base_channels=4", "model.dcgan.z_dim=8", "model.self_mod_hidden=8",
        f"batch_size={BATCH}", f"model.trunk={trunk}", f"model.norm={norm}", f"loss={loss}",
        *labelled, *overrides])
    if loss != "ogan" and loss != "wasserstein":
        configs.apply_overrides(config, ["penalty.kind=r1"])
    return config


def _one_step(config):
    config_lib.validate(config)
    num_classes = NUM_CLASSES if config_lib.is_labelled(config) else 0
    nets = gan_train.build_nets(config, num_classes=num_classes)
    init, step = gan_train.make_state_and_step(config, nets)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    count = config.steps.critic * config.batch_size
    batch = {"real": rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)}
    if num_classes:
        batch["labels"] = np.arange(count, dtype=np.int32) % num_classes
    after, metrics = jax.jit(step)(state, batch, jax.random.PRNGKey(1))
    return nets, jax.device_get(state), jax.device_get(after), jax.device_get(metrics)


def _moved(before, after) -> list[str]:
    flat_before = dict(jax.tree_util.tree_leaves_with_path(before))
    return [jax.tree_util.keystr(path) for path, leaf in
            jax.tree_util.tree_leaves_with_path(after)
            if "kernel" in jax.tree_util.keystr(path)
            and not np.array_equal(leaf, flat_before[path])]


def _kernel_count(tree) -> int:
    return sum("kernel" in jax.tree_util.keystr(path)
               for path, _ in jax.tree_util.tree_leaves_with_path(tree))


LOSSES = ("non_saturating", "wasserstein", "hinge", "ogan")
# Compiling dominates (tens of seconds per cell on a busy 2-core machine): two cells unmarked,
# the whole grid under `slow`. The grid tests the wiring, so it takes XLA's convs, which
# compile in half the time of the patch-matmul ones (tests/kernels/test_conv.py checks those
# against XLA's; the preset runs below train with them).
QUICK = {("dcgan", "self_mod", "wasserstein"), ("stylegan_lite", "adain", "non_saturating")}


def _cells():
    for trunk in gan_trunks.TRUNKS:
        for norm in gan_norms.NORMS:
            for loss in LOSSES:
                marks = () if (trunk, norm, loss) in QUICK else (pytest.mark.slow,)
                yield pytest.param(trunk, norm, loss, marks=marks)


@pytest.mark.parametrize("trunk, norm, loss", list(_cells()))
def test_one_step_per_trunk_norm_loss_cell(trunk, norm, loss):
    config = _config(trunk, norm, loss, "model.dcgan.conv=xla")
    if (trunk in gan_trunks.CONSTANT_INPUT_TRUNKS and norm not in gan_norms.LATENT_NORMS) or (
            loss == "ogan" and norm in gan_norms.LABEL_NORMS):
        with pytest.raises(ConfigError):
            config_lib.validate(config)
        return
    nets, before, after, metrics = _one_step(config)
    assert all(np.isfinite(value) for value in metrics.values()), metrics
    assert int(after["step"]) == 1
    for name in ("critic", "generator"):
        moved = _moved(before[name]["params"], after[name]["params"])
        assert len(moved) == _kernel_count(before[name]["params"]) > 0, name
    # Output shapes, and the parameter count the trainer reports is both nets'.
    z = jnp.zeros((2, 8))
    labels = (jnp.zeros(2, jnp.int32),) if nets.num_classes else ()
    generator_vars = {"params": after["generator"]["params"],
                      **after["generator"]["collections"]}
    images = nets.generator.apply(generator_vars, z, *labels, train=False)
    assert images.shape == (2, 32, 32, 3)
    critic_vars = {"params": after["critic"]["params"], **after["critic"]["collections"]}
    scores = nets.critic.apply(critic_vars, images, *labels, train=False)
    assert scores.shape == ((2, 8) if loss == "ogan" else (2,))


@pytest.mark.parametrize("conv_name", ["xla", "patch_matmul"])
def test_resnet_nets_with_fused_resampling_convs_equal_resample_then_conv(conv_name):
    spec = dict(resolution=32, z_dim=8, base_channels=4, norm=gan_norms.BatchNorm,
                conv=conv.conv_for_backend(conv_name))
    literal = gan_trunks.resnet_trunk(gan_trunks.TrunkSpec(**spec))
    fused = gan_trunks.resnet_trunk(gan_trunks.TrunkSpec(
        **spec, upsample_conv=conv.nearest_upsample_conv(
            conv.conv_for_backend(conv_name, transpose=True)),
        pooled_conv=conv.average_pooled_conv(conv.conv_for_backend(conv_name))))
    z = jax.random.normal(jax.random.key(0), (3, 8))
    images = jax.random.uniform(jax.random.key(2), (3, 32, 32, 3), minval=-1, maxval=1)
    for name, inputs, shape in (("generator", z, (3, 32, 32, 3)), ("critic", images, (3,))):
        variables = getattr(literal, name).init(jax.random.key(1), inputs, train=False)
        # The same parameter tree, so checkpoints load either way.
        assert (jax.tree.structure(getattr(fused, name).init(jax.random.key(1), inputs,
                                                             train=False))
                == jax.tree.structure(variables)), name
        want = getattr(literal, name).apply(variables, inputs, train=False)
        got = getattr(fused, name).apply(variables, inputs, train=False)
        assert got.shape == shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_ogan_stop_gradient_step_has_the_gradients_of_its_two_losses():
    # XLA's convs compile faster than the patch-matmul ones; the identity is the same.
    config = _config("dcgan", "bn", "ogan", "model.dcgan.conv=xla")
    nets = gan_train.build_nets(config)
    state = ogan.make_init_state(nets, ogan.make_optimizer(config.ogan), BATCH)(
        jax.random.PRNGKey(0))
    params = {name: state[name]["params"] for name in ("critic", "generator")}
    collections = {name: state[name]["collections"] for name in ("critic", "generator")}
    x_real = jax.random.uniform(jax.random.PRNGKey(2), (BATCH, 32, 32, 3), minval=-1)
    z = jax.random.normal(jax.random.PRNGKey(3), (BATCH, 8))
    l1, l2 = 0.25, 0.5
    joint = jax.jit(jax.grad(lambda p: ogan.joint_loss(
        p, collections, nets, x_real, z, correlation_weight=l2, penalty_weight=l1)[0]))(params)

    def encode(critic_params, x):
        return gan_train._apply(nets.critic, critic_params, collections["critic"], x)[0]

    def generate(generator_params):
        return gan_train._apply(nets.generator, generator_params, collections["generator"],
                                z)[0]

    def encoder_loss(critic_params):   # E: avg E(x_r) − avg E(x_f) + λ₁R − λ₂ρ, x_f fixed
        x_fake = generate(params["generator"])
        e_real, e_fake = encode(critic_params, x_real), encode(critic_params, x_fake)
        s_real, s_fake = e_real.mean(-1), e_fake.mean(-1)
        ratio = (s_real - s_fake) ** 2 / jnp.mean((x_real - x_fake) ** 2, axis=(1, 2, 3))
        rho = jnp.mean(ogan.standardize(z) * ogan.standardize(e_fake), -1)
        return jnp.mean(s_real - s_fake) + l1 * jnp.mean(ratio) - l2 * jnp.mean(rho)

    def generator_loss(generator_params):  # G: avg E(G(z)) − λ₂ρ
        e_fake = encode(params["critic"], generate(generator_params))
        rho = jnp.mean(ogan.standardize(z) * ogan.standardize(e_fake), -1)
        return jnp.mean(e_fake.mean(-1)) - l2 * jnp.mean(rho)

    two_loss = {"critic": jax.jit(jax.grad(encoder_loss))(params["critic"]),
                "generator": jax.jit(jax.grad(generator_loss))(params["generator"])}
    for name in ("critic", "generator"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(joint[name]),
                                jax.tree.leaves(two_loss[name])):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4,
                                       err_msg=f"{name}{jax.tree_util.keystr(path)}")
        assert any(np.abs(leaf).max() > 0 for leaf in jax.tree.leaves(joint[name]))


def test_pearson_correlation_by_hand():
    a = jnp.array([[1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 1.0, 0.0]])
    b = jnp.array([[2.0, 4.0, 6.0, 8.5], [0.0, 1.0, 0.0, 1.0]])
    expected = [np.corrcoef(a[0], b[0])[0, 1], -1.0]
    np.testing.assert_allclose(ogan.pearson_correlation(a, b), expected, rtol=1e-5)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.norm"):
        config_lib.validate(_config("dcgan", "conditional_bn", "wasserstein",
                                    "data.labels=none"))
    with pytest.raises(ConfigError, match="model.attention.pattern"):
        config_lib.validate(_config("dcgan", "bn", "wasserstein", "model.attention.resolution=8",
                                    "model.attention.pattern=local"))
    with pytest.raises(ConfigError, match="model.attention.resolution"):
        config_lib.validate(_config("dcgan", "bn", "wasserstein",
                                    "model.attention.resolution=12"))
    with pytest.raises(ConfigError, match="model.trunk"):
        config = gan.get_config("smoke")
        configs.apply_overrides(config, ["model.trunk=resnet"])
        config_lib.validate(config)


# ---------------------------------------------------------------------------- data


def _labelled_folder(root: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for name, shade in (("dark", 40), ("light", 220)):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(shade + rng.integers(-20, 20, (20, 24, 3)), 0, 255)
            PIL.Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_labelled_folders_give_one_class_per_sub_folder_and_errors_name_files(tmp_path):
    root = _labelled_folder(tmp_path / "faces")
    images, labels, names, skipped = input_pipeline.load_labelled_images(root, 16)
    assert names == ["dark", "light"] and skipped == []
    assert images.shape == (24, 16, 16, 3) and list(np.bincount(labels)) == [12, 12]
    assert images[labels == 0].mean() < 80 < 180 < images[labels == 1].mean()
    only, only_labels, only_names, _ = input_pipeline.load_labelled_images(
        root, 16, classes="light")
    assert only_names == ["light"] and len(only) == 12 and set(only_labels) == {0}
    (root / "light" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(data.RecordError, match="broken.png"):
        input_pipeline.load_labelled_images(root, 16)
    with pytest.raises(data.RecordError, match="missing"):
        input_pipeline.load_labelled_images(root, 16, classes="missing")


@pytest.mark.skipif(not OLIVETTI.is_dir(), reason="../shared/data/gan_faces absent")
def test_olivetti_sheet_gives_40_identities_of_10_faces():
    images, labels, names = input_pipeline.load_olivetti(OLIVETTI / "olivettifaces.gif", 32)
    assert images.shape == (400, 32, 32, 3) and len(names) == 40
    assert list(np.bincount(labels)) == [10] * 40
    assert np.array_equal(images[..., 0], images[..., 2])   # grayscale made RGB
    # Tiles of one person look alike more than tiles of two people (pixel distance).
    faces = images[..., 0].astype(np.float64).reshape(40, 10, -1)
    within = np.mean([np.abs(f[:, None] - f[None]).mean() for f in faces])
    across = np.abs(faces[:, 0][:, None] - faces[:, 0][None]).mean()
    assert within < across


# ---------------------------------------------------------------------------- runs


def _image_folder(root: pathlib.Path, count: int = 24) -> pathlib.Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            root / f"{i}.png")
    return root


TINY = ["--config.data.resolution=32", "--config.model.dcgan.base_channels=4",
        "--config.model.dcgan.z_dim=8", "--config.batch_size=4",
        "--config.data.num_eval_images=8", "--config.samples.grid_side=2",
        "--config.trainer.num_steps=2", "--config.trainer.eval_every=0",
        "--config.trainer.log_every=1", "--config.trainer.checkpoint_every=2",
        "--config.trainer.progress_bar=false"]


def test_selfmod_preset_smoke_run(tmp_path):
    folder = _image_folder(tmp_path / "images")
    result = launch.run_experiment("gan:selfmod", ["--workdir", str(tmp_path / "run"),
                                                   f"--config.data.path={folder}",
                                                   "--config.model.self_mod_hidden=8", *TINY])
    assert np.isfinite(result["swd_avg"]) and result["step"] == 2
    assert 0.0 < result["diversity"] < 2.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "self_mod" in summary["method"] and summary["num_params"] > 0
    assert (tmp_path / "run" / "samples" / "step_0000002.png").exists()


@pytest.mark.slow
def test_ogan_run_writes_reconstructions_and_an_interpolation_strip(tmp_path):
    folder = _image_folder(tmp_path / "images")
    result = launch.run_experiment("gan:ogan", ["--workdir", str(tmp_path / "run"),
                                                f"--config.data.path={folder}",
                                                "--config.model.self_mod_hidden=8", *TINY])
    assert result["reconstruction_mse"] > 0 and result["reconstruction_swd"] > 0
    samples = tmp_path / "run" / "samples"
    assert (samples / "reconstruction_step_0000002.png").exists()
    strip = PIL.Image.open(samples / "interpolation_step_0000002.png")
    assert strip.size == (8 * 32, 32)


@pytest.mark.slow
def test_conditional_run_writes_a_grid_and_an_swd_per_class(tmp_path):
    root = _labelled_folder(tmp_path / "faces")
    result = launch.run_experiment("gan:cbn", [
        "--workdir", str(tmp_path / "run"), "--config.data.kind=images",
        f"--config.data.path={root}", "--config.data.labels=subfolders", *TINY])
    assert set(result) >= {"swd_class_dark", "swd_class_light", "swd_class_mean"}
    # Dark and light faces are told apart by their nearest held-out image.
    assert result["class_agreement_real"] == 1.0
    assert 0.0 <= result["class_agreement"] <= 1.0 and 0.0 < result["class_agreement_chance"] < 1
    assert (tmp_path / "run" / "samples" / "step_0000002_class_light.png").exists()


# ---------------------------------------------------------------------------- generated shapes


def test_generated_shapes_fill_their_box_as_a_circle_square_or_triangle_does():
    """Each shape's bright pixels fill its bounding box by its area ratio: π/4 for a circle,
    1 for a square, 1/2 for a triangle (shape channels are ≥ 128, backgrounds < 96)."""
    images, labels, names = input_pipeline.generate_shapes(60, 64, seed=3)
    assert images.shape == (60, 64, 64, 3) and images.dtype == np.uint8
    assert names == ["circle", "square", "triangle"] and list(np.bincount(labels)) == [20] * 3
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
    for image, label in zip(images, labels):
        mask = image.max(axis=-1) > 112
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (rows[-1] - rows[0] + 1) * (columns[-1] - columns[0] + 1)
        assert mask.sum() / box == pytest.approx(expected[names[label]], abs=0.1)
    again, _, _ = input_pipeline.generate_shapes(60, 64, seed=3)
    assert np.array_equal(images, again)
    assert not np.array_equal(images, input_pipeline.generate_shapes(60, 64, seed=4)[0])


def test_conditional_demo_on_generated_shapes_runs_without_data_files(tmp_path):
    """`make demo`'s architecture run (gan:cbn_demo), shortened: labelled shapes, no path."""
    result = launch.run_experiment("gan:cbn_demo", [
        "--workdir", str(tmp_path / "run"), "--config.data.num_shapes=48",
        *[arg for arg in TINY if "resolution" not in arg]])
    assert set(result) >= {"swd_class_circle", "swd_class_square", "swd_class_triangle"}
    assert 0.0 <= result["class_agreement"] <= 1.0
    assert (tmp_path / "run" / "samples" / "step_0000002_class_triangle.png").exists()


def test_shapes_need_no_path_but_a_positive_count():
    config = config_lib.get_config("cbn_demo")
    config_lib.validate(config)
    with pytest.raises(ConfigError, match="data.num_shapes"):
        configs.apply_overrides(config, ["data.num_shapes=0"])
        config_lib.validate(config)
