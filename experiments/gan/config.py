"""Configs of the GAN experiment: WGAN-div and its baselines (docs/wgan_div.md).

    python launch.py gan                                   # WGAN-div (seed settings) on the 8-ring
    python launch.py gan:demo                              # about a minute on 2 CPU cores
    python launch.py gan:wgan_gp --config.data.mixture=grid
    python launch.py gan --config.data.kind=images \\
        --config.data.path=../shared/data/gan_faces/celeba_align_10k --config.data.resolution=64
    python -m experiments.gan.sweep mixture --seeds 3      # the results tables (README)

Variants are the presets of docs/wgan_div.md §4.1 plus "smoke" (tests) and "demo" (`make demo`):

| variant        | loss           | penalty (r(x))                          | D:G | Adam lr,β1,β2|
|----------------|----------------|-----------------------------------------|-----|--------------|
| wgan_div ("")  | wasserstein    | W-div k=2, p=6 (real_and_fake), §2.3    | 1:1 | 2e-4,.5,.999 |
| wgan_div_paper | wasserstein    | W-div k=10, p=6 (real–fake interp) §2.4 | 4:1 | 2e-4, 0, .9  |
| dcgan          | non_saturating | none, §2.5                              | 1:2 | 2e-4,.5,.999 |
| wgan_gp        | wasserstein    | GP λ=10, centre 1 (real–fake interp)    | 5:1 | 2e-4,.5,.999 |
| wgan_sn        | wasserstein    | none; spectrally normalised critic §2.5 | 5:1 | 2e-4,.5,.999 |

Every column is an independent config value: `--config.penalty.kind=r1` on the dcgan preset,
`--config.steps.critic=5` on wgan_div, and so on.

Architecture presets (https://kexue.fm/archives/6549, docs/gan_architectures.md), all on
image data (`--config.data.path=DIR`; gan:cbn reads the Olivetti faces GIF):

| variant       | post section   | trunk         | generator norm  | objective            |
|---------------|----------------|---------------|-----------------|----------------------|
| resnet        | ResNet (§3.2)  | resnet, α=0.1 | bn              | WGAN-div (seed)      |
| selfmod       | SELF-MOD (§3.4)| dcgan (ogan G)| self_mod, 128   | WGAN-div (seed)      |
| stylegan_lite | AdaIN (§3.5)   | stylegan_lite | adain           | WGAN-div (seed)      |
| ogan          | O-GAN (§3.7)   | dcgan (ogan)  | self_mod, 128   | O-GAN, RMSprop 1e-4  |
| cbn           | Cond. BN (§3.3)| dcgan         | conditional_bn  | WGAN-div, projection |

and "cbn_demo" (`make demo`): cbn on generated shapes at 32² (`data.kind=shapes`, no files).

Trunk (`model.trunk`), generator norm (`model.norm`), SAGAN attention
(`model.attention.resolution`, `.pattern`) and loss are independent switches:
`--config.model.trunk=resnet --config.model.norm=self_mod` is the SELF-MOD ResNet.

The default data is the embedded 2-D mixture benchmark (`experiments.gan.mixture`; 8 modes on a
ring, or 25 on a grid) with the MLP nets of `models.mlp_gan`: it needs no files. With
`data.kind=images` the preset's DCGAN nets (`models.dcgan.CRITICS` / `GENERATORS`) train on an
image folder, with `data.kind=olivetti` on the Olivetti faces, with `data.kind=shapes` on
generated labelled shapes (`input_pipeline.generate_shapes`).

Expected (`python -m experiments.gan.sweep mixture`): see results/gan/mixture.md.
"""

import math

import ml_collections

from experiments import configs, trainer
from experiments.configs import ConfigError
from kernels import conv, gan_losses, gradient_penalty
from models import dcgan, gan_norms, gan_trunks, transformer

PRESETS = ("wgan_div", "wgan_div_paper", "dcgan", "wgan_gp", "wgan_sn")
ARCHITECTURE_PRESETS = ("resnet", "selfmod", "stylegan_lite", "ogan", "cbn")
VARIANTS = ("",) + PRESETS + ARCHITECTURE_PRESETS + ("smoke", "demo", "cbn_demo")
# The GAN losses of kernels.gan_losses, and O-GAN's own objective (experiments.gan.ogan).
OGAN = "ogan"
LOSSES = tuple(gan_losses.GAN_LOSSES) + (OGAN,)
PENALTIES = ("none", "wgan_div", "wgan_gp", "r1", "r2")  # what train.make_penalty builds
DATA_KINDS = ("mixture", "images", "olivetti", "shapes")
MIXTURES = ("ring", "grid")                                  # experiments.gan.mixture
LABELS = ("none", "subfolders")   # data.labels: class = the first sub-folder under data.path
TRUNKS = tuple(gan_trunks.TRUNKS)
NORMS = tuple(gan_norms.NORMS)

# What defines a trained generator and critic, for any mode that reads a training run's
# WORKDIR/config.json instead of training (experiments.configs.merge_trained).
TRAINED_FIELDS = ("model", "data.kind", "data.mixture", "data.resolution", "data.labels",
                  "data.classes", "loss")


def _adam(learning_rate: float, b1: float, b2: float, eps: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps})


def _base_config() -> ml_collections.ConfigDict:
    """The seed's WGAN-div (docs/wgan_div.md §4.1) on the embedded mixture benchmark."""
    config = ml_collections.ConfigDict()

    # The GAN objective (kernels.gan_losses; sign convention: real samples score HIGH).
    config.loss = "wasserstein"      # §2.1: D: E[T(fake)] − E[T(real)], G: −E[T(fake)]

    config.penalty = ml_collections.ConfigDict()
    config.penalty.kind = "wgan_div"  # none | wgan_div | wgan_gp | r1 | r2 (§2.2)
    config.penalty.k = 2.0            # W-div weight k > 0 (§1.3: k = 2 best)
    config.penalty.p = 6.0            # W-div power p > 1 (§1.3: p = 6 best)
    config.penalty.strategy = "real_and_fake"  # r(x), §2.3: the seed's choice
    config.penalty.weight = 10.0      # λ of wgan_gp (§2.2), γ of r1 / r2
    config.penalty.center = 1.0       # wgan_gp's target norm (§2.2: one-centred)

    # D:G step ratio: one training step = `critic` D updates, then `generator` G updates.
    config.steps = ml_collections.ConfigDict()
    config.steps.critic = 1           # §4.1: 1 D step : 1 G step
    config.steps.generator = 1

    # Separate optimisers (§4.1: Adam(2e-4, β1 = 0.5), β2 the Keras default 0.999;
    # ε = 1e-7 is Keras's, docs/index.md §2).
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.critic = _adam(2e-4, 0.5, 0.999, 1e-7)
    config.optimizer.generator = _adam(2e-4, 0.5, 0.999, 1e-7)

    config.batch_size = 64            # §4.1 (per D update and per G update)

    config.data = ml_collections.ConfigDict()
    # mixture (embedded, §5.1) | images (folder, §5.2) | olivetti | shapes (generated,
    # labelled: circle, square, triangle; docs/gan_architectures.md §4)
    config.data.kind = "mixture"
    config.data.mixture = "ring"      # ring: 8 modes | grid: 25 modes (experiments.gan.mixture)
    config.data.path = ""             # images: a folder of image files (sub-folders allowed)
    # images: side of the square crop after resizing. The reference uses 128 on CelebA-HQ; the
    # paper's code and the baselines 64, the practical size of 89×109 aligned CelebA files.
    config.data.resolution = 64
    config.data.skip_bad = False      # images: skip (and count) undecodable files
    config.data.cache_dir = ""        # images: where the decoded uint8 .npy goes ("": workdir)
    config.data.num_eval_images = 1000  # images: held-out real images for the SWD
    config.data.num_shapes = 3072     # shapes: how many to generate (seeded by trainer.seed)
    # Class labels for conditional training: "subfolders" = one class per sub-folder of
    # data.path (data.kind=olivetti: always the 40 identities).
    config.data.labels = "none"
    config.data.classes = ""          # subfolders: comma-separated names to use ("": all)

    config.model = ml_collections.ConfigDict()
    # data.kind=mixture: the MLP nets (models.mlp_gan, WGAN-GP's gan_toy.py sizes).
    config.model.mlp = ml_collections.ConfigDict()
    config.model.mlp.z_dim = 2        # gan_toy.py
    config.model.mlp.width = 512      # gan_toy.py: 3 × 512 ReLU
    config.model.mlp.num_hidden = 3
    config.model.mlp.spectral_norm = False  # the WGAN-SN preset wraps every critic layer
    # data.kind=images: rows of models.dcgan.CRITICS / GENERATORS.
    config.model.dcgan = ml_collections.ConfigDict()
    config.model.dcgan.critic = "wgan_div"     # §3.1 critic (GAP head, LeakyReLU 0.2)
    config.model.dcgan.generator = "wgan_div"  # §3.1 generator
    config.model.dcgan.z_dim = 128             # §3.1 (100 in the §3.2 baselines)
    config.model.dcgan.base_channels = 64      # §3.1: convs 64 → … → 8·R
    # Both nets' (transposed) convolutions (kernels.conv): "auto" = patch_matmul on CPU, where
    # XLA's own conv gradients are slow (results/benchmarks/gradient_penalty.md), "xla" on
    # GPU/TPU; the values are the same.
    config.model.dcgan.conv = "auto"
    config.model.sn_power_iterations = 1       # wgan_sn critic (models.spectral_norm)
    # Image nets: the trunk (models.gan_trunks.TRUNKS) and the generator's norm
    # (models.gan_norms.NORMS), independent switches (docs/gan_architectures.md).
    config.model.trunk = "dcgan"      # dcgan | resnet | stylegan_lite
    config.model.norm = "bn"          # bn | none | layer_norm | conditional_bn | self_mod | adain
    # SELF-MOD's MLP hidden width: the author's code uses z_dim = 128, the paper's 32.
    config.model.self_mod_hidden = 128
    config.model.residual_scale = 0.1  # resnet: x + α·f(x) (the post: α < 1, e.g. 0.1)
    # resnet: the generator's conv3×3(up(x)) and the critic's pool(conv3×3(x)) each as one
    # stride-2 (transposed) conv with the kernel summed over 2×2 blocks
    # (kernels.conv.nearest_upsample_conv / average_pooled_conv): the same values in 16
    # multiplies per low-resolution pixel instead of 36. False: resample and conv apart.
    config.model.fuse_resampling_convs = True
    config.model.mapping_layers = 4    # stylegan_lite: depth of the z → w MLP (StyleGAN: 8)
    # SAGAN self-attention in both nets after the layer of this side (0: none); the pattern
    # as the sparse LM's model.pattern ("full", "local:16", "atrous:4", ...).
    config.model.attention = ml_collections.ConfigDict()
    config.model.attention.resolution = 0
    config.model.attention.pattern = "full"

    # O-GAN (loss=ogan, https://kexue.fm/archives/6409): the seed's weights, one RMSprop.
    config.ogan = ml_collections.ConfigDict()
    config.ogan.correlation_weight = 0.5   # λ₂ (o_gan_celeba_sm_4x4.py; 1.0 at 256 px)
    config.ogan.penalty_weight = 0.25      # λ₁ of the gradient-ratio penalty R
    config.ogan.learning_rate = 1e-4       # RMSprop(1e-4, ρ = 0.99, ε = 1e-7 Keras)
    config.ogan.decay = 0.99
    config.ogan.eps = 1e-7

    config.samples = ml_collections.ConfigDict()
    config.samples.grid_side = 8      # images: an 8×8 grid from a fixed latent batch
    config.samples.num_points = 2500  # mixture: samples scored and plotted (VEEGAN / PacGAN)

    config.trainer = trainer.default_config()
    # The reference shows samples at 20k iterations (§4.1); the mixture needs far fewer
    # (the demo: 2k).
    config.trainer.num_steps = 20000
    config.trainer.eval_every = 1000  # samples (grid / scatter) and metrics every N steps
    config.trainer.checkpoint_every = 1000
    config.trainer.log_every = 100
    # The trainer's EMA of the generator, used for samples, evaluation and checkpoints. The
    # seed has none; 0.999 is the author's EMA decay in his O-GAN code
    # (o_gan_celeba_sm_4x4_ema_256.py). 0 turns it off.
    config.trainer.ema_decay = 0.999
    return config


def _apply_preset(config: ml_collections.ConfigDict, preset: str) -> None:
    """Overwrites the fields a preset of docs/wgan_div.md §4.1 changes (wgan_div is the base)."""
    if preset == "wgan_div_paper":  # the paper's official code (§4.1)
        config.penalty.k = 10.0        # LAMBDA = 10 multiplies mean(‖∇‖^6)
        config.penalty.strategy = "real_fake_interpolation"
        config.steps.critic = 4
        config.optimizer.critic = _adam(2e-4, 0.0, 0.9, 1e-8)      # TF Adam's ε
        config.optimizer.generator = _adam(2e-4, 0.0, 0.9, 1e-8)
        return
    if preset == "wgan_div":
        return
    # The §2.5 baselines: Keras-default nets at 64 px with z = 100, Adam(2e-4, 0.5).
    config.model.dcgan.critic = preset
    config.model.dcgan.generator = preset
    config.model.dcgan.z_dim = 100
    if preset == "dcgan":
        config.loss = "non_saturating"
        config.penalty.kind = "none"
        config.steps.generator = 2     # 1 D : 2 G
    elif preset == "wgan_gp":
        config.penalty.kind = "wgan_gp"
        config.penalty.weight = 10.0
        config.penalty.center = 1.0
        config.penalty.strategy = "real_fake_interpolation"
        config.steps.critic = 5
    elif preset == "wgan_sn":
        config.penalty.kind = "none"
        config.model.mlp.spectral_norm = True
        config.steps.critic = 5


def _apply_architecture_preset(config: ml_collections.ConfigDict, preset: str) -> None:
    """The post's architectures (https://kexue.fm/archives/6549) on images at 64 px."""
    config.data.kind = "images"
    if preset == "resnet":            # post §ResNet: residual blocks, α = 0.1
        config.model.trunk = "resnet"
    elif preset == "selfmod":         # post §SELF-MOD: the author's SELF-MOD G, W-div critic
        config.model.norm = "self_mod"
        config.model.dcgan.generator = "ogan"
    elif preset == "stylegan_lite":   # post §AdaIN/StyleGAN, without progressive growing
        config.model.trunk = "stylegan_lite"
        config.model.norm = "adain"
    elif preset == "ogan":            # o_gan_celeba_sm_4x4.py (https://kexue.fm/archives/6409)
        config.loss = OGAN
        config.penalty.kind = "none"
        config.model.norm = "self_mod"
        config.model.dcgan.generator = "ogan"
        config.model.dcgan.critic = "ogan"
    elif preset == "cbn":             # post §Conditional BN: 40 Olivetti identities
        config.data.kind = "olivetti"
        config.data.resolution = 32
        config.data.num_eval_images = 80
        config.model.norm = "conditional_bn"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """A preset of docs/wgan_div.md §4.1 or of docs/gan_architectures.md, "smoke" or "demo"; "" is
    the seed's WGAN-div.

    Raises:
      ConfigError: for an unknown variant.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r} of gan; valid: "
                          + ", ".join(repr(v) for v in VARIANTS))
    config = _base_config()
    if variant in PRESETS:
        _apply_preset(config, variant)
    if variant in ARCHITECTURE_PRESETS:
        _apply_architecture_preset(config, variant)
    if variant == "demo":
        # WGAN-div with the seed's settings on the 8-ring; about a minute on 2 CPU cores.
        config.model.mlp.width = 128
        config.batch_size = 256       # gan_toy.py's batch
        config.trainer.num_steps = 3000
        config.trainer.eval_every = 1000
        config.trainer.checkpoint_every = 1000
    if variant == "cbn_demo":
        # The post's conditional BN (the cbn preset) on generated shapes at 32², one class
        # per shape; about a minute on 2 CPU cores (`make demo`).
        _apply_architecture_preset(config, "cbn")
        config.data.kind = "shapes"
        config.data.resolution = 32
        config.data.num_eval_images = 512
        config.model.dcgan.base_channels = 32
        config.batch_size = 32
        config.trainer.num_steps = 800
        config.trainer.eval_every = 400
        config.trainer.checkpoint_every = 400
    if variant == "smoke":
        config.model.mlp.width = 32
        config.model.mlp.num_hidden = 2
        config.batch_size = 16
        config.samples.num_points = 256
        config.trainer.num_steps = 20
        config.trainer.log_every = 5
        config.trainer.eval_every = 10
        config.trainer.checkpoint_every = 10
        config.trainer.progress_bar = False
    config.lock()
    return config


def _is_power_of_two(value: int) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value `run` depends on, before any data is read or anything is traced.

    Raises:
      ConfigError: "--config.KEY=VALUE: problem" for the first bad value.
    """
    require = configs.require
    configs.require_choice(config, "loss", LOSSES)
    penalty = config.penalty
    configs.require_choice(config, "penalty.kind", PENALTIES)
    require(penalty.k > 0 and math.isfinite(penalty.k), "penalty.k", penalty.k,
            "k must be > 0 and finite (the weight of the W-div penalty)")
    require(penalty.p > 1 and math.isfinite(penalty.p), "penalty.p", penalty.p,
            "p must be > 1 and finite for W_k,p to be a divergence")
    configs.require_choice(config, "penalty.strategy", gradient_penalty.STRATEGIES)
    configs.require_number(config, "penalty.weight", 0, math.inf)
    configs.require_number(config, "penalty.center", 0, math.inf)
    for name in ("critic", "generator"):
        configs.require_int(config, f"steps.{name}", 1)
        configs.require_number(config, f"optimizer.{name}.learning_rate", 0, math.inf,
                               low_open=True)
        for beta in ("b1", "b2"):
            configs.require_number(config, f"optimizer.{name}.{beta}", 0, 1, high_open=True)
        configs.require_number(config, f"optimizer.{name}.eps", 0, math.inf, low_open=True)
    configs.require_number(config, "trainer.ema_decay", 0, 1, high_open=True, why="0: no EMA")
    configs.require_int(config, "batch_size", 1)
    configs.require_choice(config, "data.kind", DATA_KINDS)
    configs.require_int(config, "model.sn_power_iterations", 1)
    configs.require_trainer(config)
    configs.require_choice(config, "model.trunk", TRUNKS)
    configs.require_choice(config, "model.norm", NORMS)
    configs.require_choice(config, "data.labels", LABELS)
    if config.data.kind == "mixture":
        configs.require_choice(config, "data.mixture", MIXTURES)
        for name in ("z_dim", "width", "num_hidden"):
            configs.require_int(config, f"model.mlp.{name}", 1)
        configs.require_int(config, "samples.num_points", 1)
        for key, default in (("model.trunk", "dcgan"), ("model.norm", "bn"),
                             ("data.labels", "none")):
            require(_get(config, key) == default, key, _get(config, key),
                    "the 2-D mixtures train the MLP nets: set data.kind=images")
        require(config.loss != OGAN, "loss", config.loss,
                "O-GAN needs image nets: set data.kind=images")
        return
    if config.data.kind == "shapes":
        configs.require_int(config, "data.num_shapes", 1)
    else:
        require(bool(config.data.path), "data.path", config.data.path,
                f"data.kind={config.data.kind} needs --config.data.path="
                + ("FOLDER" if config.data.kind == "images" else "olivettifaces.gif"))
    _validate_architecture(config)
    resolution = config.data.resolution
    require(_is_power_of_two(resolution) and resolution >= dcgan.MIN_RESOLUTION,
            "data.resolution", resolution,
            f"must be a power of two >= {dcgan.MIN_RESOLUTION} (the DCGAN nets halve it down "
            f"to {dcgan.FEATURE_MAP_SIZE}×{dcgan.FEATURE_MAP_SIZE})")
    configs.require_choice(config, "model.dcgan.critic", dcgan.CRITICS)
    configs.require_choice(config, "model.dcgan.generator", dcgan.GENERATORS)
    configs.require_choice(config, "model.dcgan.conv", conv.CONV_IMPLEMENTATIONS)
    for name in ("z_dim", "base_channels"):
        configs.require_int(config, f"model.dcgan.{name}", 1)
    configs.require_int(config, "samples.grid_side", 1)
    configs.require_int(config, "data.num_eval_images", 2,
                        "the sliced Wasserstein distance compares two sets of images")


def _get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def is_labelled(config: ml_collections.ConfigDict) -> bool:
    """Whether the run trains on class labels (Olivetti, generated shapes, or sub-folders as
    classes)."""
    return config.data.kind in ("olivetti", "shapes") or (
        config.data.kind == "images" and config.data.labels == "subfolders")


def attention_pattern(config: ml_collections.ConfigDict):
    """The `kernels.attention` pattern of `model.attention.pattern` (its first part).

    Raises:
      ConfigError: a pattern string `models.transformer.parse_pattern` refuses, or a cycle of
        several (one block has one pattern).
    """
    text = config.model.attention.pattern
    try:
        patterns = transformer.parse_pattern(text)
    except ValueError as error:
        raise ConfigError(f"--config.model.attention.pattern={text}: {error}") from None
    if len(patterns) != 1:
        raise ConfigError(f"--config.model.attention.pattern={text}: one block takes one "
                          "pattern, not a cycle")
    return patterns[0]


def _validate_architecture(config: ml_collections.ConfigDict) -> None:
    """The trunk, norm, attention, labels and O-GAN settings of image runs."""
    require, model = configs.require, config.model
    labelled = is_labelled(config)
    require(model.norm not in gan_norms.LABEL_NORMS or labelled, "model.norm", model.norm,
            "conditional_bn needs class labels: --config.data.labels=subfolders, "
            "--config.data.kind=olivetti or --config.data.kind=shapes")
    require(model.trunk not in gan_trunks.CONSTANT_INPUT_TRUNKS
            or model.norm in gan_norms.LATENT_NORMS, "model.norm", model.norm,
            f"trunk {model.trunk} has a constant input: its norm must read the latent "
            f"({', '.join(gan_norms.LATENT_NORMS)})")
    require(config.data.classes == "" or config.data.labels == "subfolders", "data.classes",
            config.data.classes, "only with --config.data.labels=subfolders")
    configs.require_int(config, "model.self_mod_hidden", 1)
    configs.require_number(config, "model.residual_scale", 0, math.inf, low_open=True)
    require(config.loss != OGAN or model.norm not in gan_norms.LABEL_NORMS, "model.norm",
            model.norm, "O-GAN is unconditional here: no class-conditional norm")
    configs.require_int(config, "model.mapping_layers", 0)
    attention = model.attention.resolution
    require(attention == 0 or (_is_power_of_two(attention) and
                               dcgan.FEATURE_MAP_SIZE <= attention <= config.data.resolution),
            "model.attention.resolution", attention,
            f"0 (none) or a power of two in [{dcgan.FEATURE_MAP_SIZE}, data.resolution]")
    if attention:
        attention_pattern(config)
    if config.loss == OGAN:
        require(config.penalty.kind == "none", "penalty.kind", config.penalty.kind,
                "O-GAN has its own gradient-ratio penalty (ogan.penalty_weight): set none")
        for name in ("critic", "generator"):
            require(config.steps[name] == 1, f"steps.{name}", config.steps[name],
                    "O-GAN trains both nets in one joint step")
        for name in ("correlation_weight", "penalty_weight"):
            configs.require_number(config, f"ogan.{name}", 0, math.inf)
        configs.require_number(config, "ogan.learning_rate", 0, math.inf, low_open=True)
        configs.require_number(config, "ogan.decay", 0, 1, high_open=True)
        configs.require_number(config, "ogan.eps", 0, math.inf, low_open=True)


def resolve(config: ml_collections.ConfigDict) -> None:
    """Replaces "auto" in `model.dcgan.conv` by the convolution that runs on this machine."""
    with config.unlocked():
        config.model.dcgan.conv = conv.resolve_conv_implementation(config.model.dcgan.conv)
