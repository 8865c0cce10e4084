"""The GAN experiment's result tables (docs/wgan_div.md), re-runnable.

    python -m experiments.gan.sweep mixture --seeds 3 --steps 1500 --out results/gan/mixture.md
    python -m experiments.gan.sweep celeba --steps 300 --resolution 32 --out results/gan/celeba.md

`mixture`: the presets on the 8-ring and the 25-grid, then, for WGAN-div (the seed's
settings otherwise), the k × p grid (k ∈ {0.5, 2, 10}, p ∈ {2, 6}) and the six strategies
of sampling r(x) (docs/wgan_div.md), each over several seeds; a markdown table of modes covered and
high-quality share (mean ± std over seeds, and the per-seed values).

`architectures` (https://kexue.fm/archives/6549, docs/gan_architectures.md): trunk × generator
norm on CelebA at one equal budget (dcgan and resnet × bn, self_mod and none, plus
stylegan_lite with AdaIN, by default), one process per run: SWD, parameter count, steps/s,
peak host (and device) memory; `--seeds 0,1 --curve` adds SELF-MOD vs BN SWD against steps.

    python -m experiments.gan.sweep architectures --steps 2000 --out results/gan/architectures.md
    python -m experiments.gan.sweep ogan --steps 2000 --out results/gan/ogan.md
    python -m experiments.gan.sweep conditional --steps 2000 --out results/gan/conditional.md

`ogan`: the O-GAN preset: sample SWD and reconstruction error. `conditional`: conditional
BN on the 40 Olivetti identities and on CelebA vs anime faces: SWD and per-class SWD.

`celeba`: the four main presets on an image folder (CelebA by default) at one equal
budget of training steps; a markdown table of the sliced Wasserstein distance and each
preset's final 8×8 sample grid next to the table.

Every run is an ordinary `python launch.py gan:PRESET` run, trained by `experiments.sweep`
in its own workdir under --workdir (SLUG-seedS); a cell whose workdir already holds a
finished run is read back instead of trained again, and an unfinished one is resumed, so an
interrupted sweep continues where it stopped. Identical cells (the seed's WGAN-div appears in
all three mixture groups) run once. The figures come from each run's summary.json: the final
evaluation scores the EMA generator, and its "live_" metrics the trained generator itself.
"""

import argparse
import dataclasses
import pathlib
import shutil
import sys

import numpy as np

from experiments import host_memory, sweep
from experiments.gan import config as config_lib
from experiments.gan import train

MAIN_PRESETS = ("wgan_div", "dcgan", "wgan_gp", "wgan_sn")
MIXTURE_PRESETS = MAIN_PRESETS + ("wgan_div_paper",)
K_VALUES = (0.5, 2.0, 10.0)
P_VALUES = (2.0, 6.0)
# The post's order (https://kexue.fm/archives/6139).
STRATEGIES = ("real_fake_interpolation", "real_real_and_fake_fake_interpolation",
              "mixed_pairs_interpolation", "real_and_fake", "fake", "real")
DEFAULT_CELEBA = "../shared/data/gan_faces/celeba_align_10k"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of a table: a variant of `experiments.gan.get_config` plus overrides."""

    group: str
    label: str
    variant: str
    overrides: tuple[str, ...]

    @property
    def slug(self) -> str:
        """A directory name that identifies the configuration (not the group or label)."""
        parts = [self.variant] + [o.replace("=", "-").replace(".", "_").replace("/", "_")
                                  for o in sorted(self.overrides)]
        return "__".join(parts)


def mixture_cells(mixtures, ablation_mixture: str) -> list[Cell]:
    """The presets on every mixture, then the k × p grid and the strategies on one."""
    cells = [Cell("presets", f"{preset} ({mixture})", preset, (f"data.mixture={mixture}",))
             for mixture in mixtures for preset in MIXTURE_PRESETS]
    ablation = (f"data.mixture={ablation_mixture}",)
    for k in K_VALUES:
        for p in P_VALUES:
            overrides = ablation if (k, p) == (2.0, 6.0) else ablation + (
                f"penalty.k={k}", f"penalty.p={p}")
            cells.append(Cell("k × p", f"k={k:g}, p={p:g} ({ablation_mixture})", "wgan_div",
                              overrides))
    for strategy in STRATEGIES:
        overrides = ablation if strategy == "real_and_fake" else ablation + (
            f"penalty.strategy={strategy}",)
        cells.append(Cell("r(x) strategy", f"{strategy} ({ablation_mixture})", "wgan_div",
                          overrides))
    return cells


def sweep_cell(cell: Cell, budget, steps: int, seeds) -> sweep.Cell:
    """The `experiments.sweep` cell of one table row: `gan:VARIANT` with the budget, the
    row's overrides and the number of steps, one run per seed in ROOT/SLUG-seedS."""
    return sweep.Cell(name=cell.slug, spec=f"gan:{cell.variant}",
                      overrides=(*budget, *cell.overrides, f"trainer.num_steps={steps}"),
                      seeds=tuple(seeds), labels={"group": cell.group, "setting": cell.label})


def run_row(cell: Cell, budget, steps: int, seeds, root: pathlib.Path) -> sweep.Row:
    """Trains, resumes or reads back every seed of one row; its `sweep.Row`."""
    [row] = sweep.run_sweep([sweep_cell(cell, budget, steps, seeds)], root)
    return row


def final_sample_plot(row: sweep.Row, steps: int) -> pathlib.Path:
    """The sample grid or scatter plot of the row's first seed at its last step."""
    return row.workdirs[0] / "samples" / f"step_{steps:07d}.png"


def _timing(rows) -> str:
    """Σ wall minutes and mean load average of the distinct runs of `sweep.Row`s."""
    runs = {workdir: summary for row in rows
            for workdir, summary in zip(row.workdirs, row.summaries)}
    totals = [sweep.lookup(s, "wall_seconds.total") for s in runs.values()]
    minutes = sum(total for total in totals if total is not None) / 60
    loads = [s["load_average"] for s in runs.values() if s.get("load_average") is not None]
    load = f"{np.mean(loads):.1f}" if loads else "not recorded"
    return (f"Sum of the {len(runs)} runs' wall times: {minutes:.1f} min (mean 1-minute load "
            f"average when the runs finished: {load}; on a shared machine the wall time grows "
            "with the load).")


# The mixture table: EMA generator (the final evaluation) and the live one ("live_").
MIXTURE_COLUMNS = (
    sweep.Column("group"), sweep.Column("setting"),
    sweep.Column("modes covered (EMA)", "final.modes_covered", ".1f", per_seed=".0f"),
    sweep.Column("high quality (EMA)", "final.high_quality", ".1f", scale=100, suffix=" %"),
    sweep.Column("modes covered (live)", "final.live_modes_covered", ".1f"),
    sweep.Column("high quality (live)", "final.live_high_quality", ".1f", scale=100,
                 suffix=" %"),
)


def reference_rows(mixtures, seeds, num_points: int = 2500) -> list[tuple[str, list[dict]]]:
    """The score of real samples (the ceiling) and of points uniform over the plotted square
    (what a generator that spreads its samples everywhere gets by chance), per mixture."""
    from experiments.gan import mixture as mixture_lib

    rows = []
    for name in mixtures:
        mix = mixture_lib.mixture(name)
        extent = float(np.max(np.abs(mix.means))) + 1.0  # the square of mixture.plot_samples
        real, uniform = [], []
        for seed in seeds:
            rng = np.random.default_rng([seed, 7])
            real.append(mixture_lib.score_samples(mix, mixture_lib.sample(mix, rng, num_points)))
            uniform.append(mixture_lib.score_samples(
                mix, rng.uniform(-extent, extent, (num_points, 2))))
        rows.append((f"real samples ({name})", real))
        rows.append((f"uniform on [−{extent:g}, {extent:g}]² ({name})", uniform))
    return rows


def sweep_mixture(args) -> str:
    """Runs the mixture cells; returns the markdown table."""
    root = pathlib.Path(args.workdir).resolve() / "mixture"
    budget = [f"model.mlp.width={args.width}", f"batch_size={args.batch_size}",
              "trainer.eval_every=0", f"trainer.checkpoint_every={args.steps}",
              f"trainer.log_every={max(1, args.steps // 20)}", "trainer.progress_bar=false"]
    seeds = range(args.seeds)
    rows = []
    for cell in mixture_cells(args.mixtures, args.ablation_mixture):
        row = run_row(cell, budget, args.steps, seeds, root)
        rows.append(row)
        modes = [sweep.lookup(summary, "final.modes_covered") for summary in row.summaries]
        print(f"[sweep] {cell.group}: {cell.label}: modes {modes}", flush=True)
        sample = final_sample_plot(row, args.steps)
        if args.images and cell.group == "presets" and sample.exists():
            out = pathlib.Path(args.images)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample, out / f"mixture_{cell.slug}.png")
    timing = _timing(rows)
    for label, scores in reference_rows(args.mixtures, seeds):
        # Real or uniform points have no EMA: the same score in both columns.
        summaries = [{"final": {"modes_covered": score["modes_covered"],
                                "high_quality": score["high_quality"],
                                "live_modes_covered": score["modes_covered"],
                                "live_high_quality": score["high_quality"]}}
                     for score in scores]
        rows.append(sweep.Row(labels={"group": "reference", "setting": label},
                              summaries=summaries))
    lines = [
        "# Mixture of Gaussians: modes covered and high-quality share",
        "",
        f"Command: `python -m experiments.gan.sweep mixture --seeds {args.seeds} "
        f"--steps {args.steps} --width {args.width} --batch-size {args.batch_size} "
        f"--mixtures {' '.join(args.mixtures)} --ablation-mixture {args.ablation_mixture}`",
        "",
        f"Budget: {args.steps} iterations per run (one iteration = the preset's critic steps "
        f"then its generator steps), {args.seeds} seeds (0–{args.seeds - 1}) per row. A "
        f"CPU-feasible budget: the MLP nets are 3 × {args.width} ReLU (gan_toy.py uses "
        f"3 × 512) and the batch is {args.batch_size} (the presets' 64); everything else "
        "is each preset's own setting (experiments/gan/config.py). The runs are far from "
        "converged: compare rows, not absolute values.",
        "",
        "Metric (VEEGAN / PacGAN): 2,500 samples from fixed latents, each assigned to its "
        "nearest mode; high quality = within 3σ of it; a mode is covered when at least one "
        "high-quality sample is assigned to it. 8-ring: 8 modes, σ = 0.02, radius 2; "
        "25-grid: 25 modes, σ = 0.05, spacing 2. \"EMA\" scores the EMA generator "
        "(decay 0.999 with warm-up), \"live\" the trained generator itself. Mean ± std "
        "(sample std) over seeds; the per-seed modes covered (EMA) in brackets.",
        "",
        "The reference rows score 2,500 real samples (the ceiling) and 2,500 points uniform "
        "over the plotted square: a generator that merely spreads its samples covers that "
        "many modes by chance. On the 25-grid at this budget every preset is still close to "
        "that chance level; only the 8-ring separates the methods.",
        "",
        timing,
        "",
        sweep.markdown_table(rows, MIXTURE_COLUMNS),
    ]
    return "\n".join(lines) + "\n"


def sweep_celeba(args) -> str:
    """Runs the four presets on the image folder at one budget; returns the table."""
    root = pathlib.Path(args.workdir).resolve() / f"images_{args.resolution}px"
    budget = ["data.kind=images", f"data.path={pathlib.Path(args.data).resolve()}",
              f"data.resolution={args.resolution}", f"data.cache_dir={root / 'cache'}",
              f"data.num_eval_images={args.eval_images}",
              f"model.dcgan.base_channels={args.base_channels}",
              f"batch_size={args.batch_size}", "trainer.eval_every=0",
              f"trainer.checkpoint_every={args.steps}",
              f"trainer.log_every={max(1, args.steps // 20)}", "trainer.progress_bar=false"]
    rows = []
    for preset in args.presets:
        cell = Cell("presets", preset, preset, ())
        row = run_row(cell, budget, args.steps, (0,), root)
        image = f"celeba_{args.resolution}px_{preset}.png"
        config = sweep.resolve_config(f"gan:{preset}", sweep_cell(cell, budget, args.steps,
                                                                  (0,)).runs()[0][1])
        rows.append(sweep.Row(labels={"preset": preset, "method": train.describe(config),
                                      "final grid": f"![{preset}]({image})"},
                              summaries=row.summaries, workdirs=row.workdirs))
        swd = sweep.lookup(row.summaries[0], "final.swd_avg")
        print(f"[sweep] {preset}: swd_avg {swd}", flush=True)
        grid = final_sample_plot(row, args.steps)
        if args.images and grid.exists():
            out = pathlib.Path(args.images)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(grid, out / image)
    timing = _timing(rows)
    rows.append(sweep.Row(labels={"preset": "real images",
                                  "method": "held-out vs training images (the floor)",
                                  "final grid": ""},
                          summaries=[{"final": real_image_reference(args, root)}]))
    levels = [key for key in rows[0].summaries[0].get("final", {})
              if key.startswith("swd_") and key != "swd_avg"]
    columns = [sweep.Column("preset"), sweep.Column("method"),
               sweep.Column("SWD avg", "final.swd_avg", ".2f"),
               *(sweep.Column(key, f"final.{key}", ".2f") for key in levels),
               sweep.Column("final grid")]
    lines = [
        f"# Image folder ({pathlib.Path(args.data).name}), {args.resolution}×{args.resolution}: "
        "sliced Wasserstein distance",
        "",
        f"Command: `python -m experiments.gan.sweep celeba --data {args.data} --steps "
        f"{args.steps} --resolution "
        f"{args.resolution} --base-channels {args.base_channels} --batch-size "
        f"{args.batch_size} --eval-images {args.eval_images}`",
        "",
        f"Budget: {args.steps} iterations for every preset (one iteration = the preset's "
        f"critic steps then its generator steps), seed 0, DCGAN nets of each preset with "
        f"base width {args.base_channels}, batch {args.batch_size}. Metric: multi-scale "
        f"SWD ×10³ (PGGAN) between {args.eval_images} held-out real images and as many "
        f"samples of the EMA generator; lower is better. " + timing,
        "",
        sweep.markdown_table(rows, columns),
    ]
    return "\n".join(lines) + "\n"


ARCHITECTURE_CELLS = (("dcgan", "bn"), ("dcgan", "self_mod"), ("dcgan", "none"),
                      ("resnet", "bn"), ("resnet", "self_mod"), ("resnet", "none"),
                      ("stylegan_lite", "adain"))
DEFAULT_FACES = "../shared/data/gan_faces"
CONDITIONAL_TASKS = ("olivetti", "celeba_vs_anime")
ARCHITECTURE_COLUMNS = (
    sweep.Column("trunk"), sweep.Column("norm"),
    sweep.Column("SWD avg", "final.swd_avg", ".2f"),
    sweep.Column("diversity", "final.diversity", ".3f"),
    sweep.Column("parameters", "num_params", ",.0f"),
    sweep.Column("steps/s", "steps_per_sec", ".2f"),
    sweep.Column("peak host MiB", "peak_host_memory_mb", ",.0f"),
    sweep.Column("peak device MiB", "peak_device_memory_mb", ",.0f"),
    sweep.Column("wall", "wall_seconds.total", ".0f", suffix=" s"),
    sweep.Column("final grid"),
)


def _image_budget(args, root: pathlib.Path, data: str) -> list[str]:
    return ["data.kind=images", f"data.path={pathlib.Path(data).resolve()}",
            f"data.resolution={args.resolution}", f"data.cache_dir={root / 'cache'}",
            f"data.num_eval_images={args.eval_images}",
            f"model.dcgan.base_channels={args.base_channels}", f"batch_size={args.batch_size}",
            f"trainer.checkpoint_every={args.steps}", "trainer.progress_bar=false",
            f"trainer.log_every={max(1, args.steps // 20)}"]


def _with_final_grids(rows, steps: int, images: str, prefix: str) -> list:
    """`rows` with a "final grid" label: each row's `final_sample_plot` copied to
    IMAGES/PREFIX_NAME.png and linked by its file name (the table is written beside the
    images)."""
    out = pathlib.Path(images)
    out.mkdir(parents=True, exist_ok=True)
    linked = []
    for row in rows:
        source = final_sample_plot(row, steps)
        name = f"{prefix}_{row.workdirs[0].name}.png"
        label = ""
        if source.exists():
            shutil.copy(source, out / name)
            label = f"![{row.workdirs[0].name}]({name})"
        linked.append(dataclasses.replace(row, labels={**row.labels, "final grid": label}))
    return linked


def _real_row(args, root: pathlib.Path, labels: dict) -> sweep.Row:
    """The held-out vs training images row (the SWD floor; diversity 1 by definition)."""
    final = {**real_image_reference(args, root), "diversity": 1.0}
    return sweep.Row(labels=labels, summaries=[{"final": final}])


def _swd_curve(workdirs) -> str:
    """'step: SWD (seed 0, seed 1, ...)' lines from each run's metrics.jsonl evaluations."""
    from experiments.gan import plots

    curves = [{row["step"]: row.get("swd_avg") for row in plots.read_metrics(
        pathlib.Path(w) / "metrics.jsonl")[1]} for w in workdirs]
    steps = sorted(set().union(*curves))
    return "\n".join(f"| {step} | " + ", ".join(
        f"{c[step]:.2f}" if c.get(step) is not None else "—" for c in curves) + " |"
        for step in steps)


def sweep_architectures(args) -> str:
    """Trunk × norm at one budget (one process per run); returns the markdown table."""
    root = pathlib.Path(args.workdir).resolve() / f"architectures_{args.resolution}px"
    budget = _image_budget(args, root, args.data) + [
        f"trainer.eval_every={args.eval_every}"]
    cells = [sweep.Cell(name=f"{trunk}__{norm}", spec="gan",
                        overrides=(*budget, f"model.trunk={trunk}", f"model.norm={norm}",
                                   f"trainer.num_steps={args.steps}"),
                        seeds=tuple(args.seeds), labels={"trunk": trunk, "norm": norm})
             for trunk, norm in args.cells]
    rows = sweep.run_sweep(cells, root, runner=sweep.run_in_subprocess)
    timing = _timing(rows)
    table_rows = _with_final_grids(rows, args.steps, args.images,
                                   f"architectures_{args.resolution}px")
    table_rows.append(_real_row(args, root, {"trunk": "real images", "norm": "held-out vs "
                                             "training (the floor)", "final grid": ""}))
    lines = [f"# GAN architectures on {pathlib.Path(args.data).name}, {args.resolution}²",
             "", f"Command: `python -m experiments.gan.sweep {' '.join(sys.argv[1:])}`", "",
             f"Budget: {args.steps} WGAN-div iterations (the seed's loss and critic), batch "
             f"{args.batch_size}, base width {args.base_channels}, seeds {args.seeds}. SWD ×10³ "
             f"of the EMA generator against {args.eval_images} held-out images (mean over "
             "seeds). Diversity: the samples' mean pairwise distance over the held-out "
             "images' (16² pixels; 1 = as spread out as the data, near 0 = mode collapse). "
             "Steps/s and memory are each run's own, in its own process. " + timing,
             "", sweep.markdown_table(table_rows, ARCHITECTURE_COLUMNS)]
    if args.curve:
        for row in rows:
            if row.labels["trunk"] == "dcgan" and row.labels["norm"] in ("bn", "self_mod"):
                lines += ["", f"SWD against steps, dcgan + {row.labels['norm']} "
                          "(one value per seed):", "", "| step | SWD |", "|---|---|",
                          _swd_curve(row.workdirs)]
    return "\n".join(lines) + "\n"


def sweep_ogan(args) -> str:
    """The O-GAN preset at one budget: sample SWD and reconstruction error."""
    root = pathlib.Path(args.workdir).resolve() / f"ogan_{args.resolution}px"
    cell = sweep.Cell(name="ogan", spec="gan:ogan", seeds=tuple(args.seeds),
                      overrides=(*_image_budget(args, root, args.data),
                                 "trainer.eval_every=0", f"trainer.num_steps={args.steps}"),
                      labels={"preset": "ogan"})
    rows = sweep.run_sweep([cell], root)
    prefix = f"ogan_{args.resolution}px"
    rows = _with_final_grids(rows, args.steps, args.images, prefix)
    for kind in ("reconstruction", "interpolation"):
        source = rows[0].workdirs[0] / "samples" / f"{kind}_step_{args.steps:07d}.png"
        if source.exists():
            shutil.copy(source, pathlib.Path(args.images) / f"{prefix}_{kind}.png")
    columns = (sweep.Column("preset"), sweep.Column("SWD avg", "final.swd_avg", ".2f"),
               sweep.Column("diversity", "final.diversity", ".3f"),
               sweep.Column("reconstruction MSE", "final.reconstruction_mse", ".4f"),
               sweep.Column("reconstruction SWD", "final.reconstruction_swd", ".2f"),
               sweep.Column("steps/s", "steps_per_sec", ".2f"), sweep.Column("final grid"))
    return (f"# O-GAN, {args.resolution}²\n\nCommand: `python -m experiments.gan.sweep "
            f"{' '.join(sys.argv[1:])}`\n\nSamples: SWD ×10³ of the EMA generator against "
            f"{args.eval_images} held-out images, and diversity as in architectures.md. "
            "Reconstructions x̂ = G(standardise(E(x))) of 256 held-out images: MSE per pixel "
            "in [−1, 1] and the SWD ×10³ between the images and their reconstructions. "
            f"Reconstruction pairs (real, reconstructed): ![]({prefix}_reconstruction.png); "
            f"latent interpolation between two held-out faces: "
            f"![]({prefix}_interpolation.png). " + _timing(rows) + "\n\n"
            f"{sweep.markdown_table(rows, columns)}\n")


def sweep_conditional(args) -> str:
    """Conditional BN on Olivetti's 40 identities and on CelebA vs anime faces."""
    root = pathlib.Path(args.workdir).resolve() / "conditional"
    faces = pathlib.Path(args.faces).resolve()
    common = (f"trainer.num_steps={args.steps}", "trainer.eval_every=0",
              f"trainer.checkpoint_every={args.steps}", "trainer.progress_bar=false",
              f"model.dcgan.base_channels={args.base_channels}", f"batch_size={args.batch_size}",
              f"data.cache_dir={root / 'cache'}")
    cells = [
        sweep.Cell(name="olivetti", spec="gan:cbn", seeds=tuple(args.seeds),
                   overrides=(*common, f"data.path={faces / 'olivetti/olivettifaces.gif'}"),
                   labels={"task": "Olivetti, 40 identities (32²)"}),
        sweep.Cell(name="celeba_vs_anime", spec="gan:cbn", seeds=tuple(args.seeds),
                   overrides=(*common, "data.kind=images", f"data.path={faces}",
                              "data.labels=subfolders",
                              "data.classes=celeba_align_10k,anime_faces_96px_5k",
                              f"data.resolution={args.resolution}",
                              f"data.num_eval_images={args.eval_images}"),
                   labels={"task": f"CelebA vs anime ({args.resolution}²)"})]
    rows = sweep.run_sweep([cell for cell in cells if cell.name in args.tasks], root)
    rows = _with_final_grids(rows, args.steps, args.images, "conditional")
    columns = (sweep.Column("task"), sweep.Column("SWD avg", "final.swd_avg", ".2f"),
               sweep.Column("per-class SWD (mean)", "final.swd_class_mean", ".2f"),
               sweep.Column("CelebA", "final.swd_class_celeba_align_10k", ".2f"),
               sweep.Column("anime", "final.swd_class_anime_faces_96px_5k", ".2f"),
               sweep.Column("nearest real image has the class", "final.class_agreement",
                            ".3f"),
               sweep.Column("chance", "final.class_agreement_chance", ".3f"),
               sweep.Column("real images (leave-one-out)", "final.class_agreement_real",
                            ".3f"),
               sweep.Column("final grid"))
    return (f"# Conditional BN\n\nCommand: `python -m experiments.gan.sweep "
            f"{' '.join(sys.argv[1:])}`\n\nSWD ×10³ of the EMA generator against the "
            "held-out images, which the samples take the labels of; per-class SWD: each "
            "class's held-out images against as many samples of that class. Class check "
            "without a classifier: the share of samples whose nearest held-out image (RMS "
            "distance at 16² pixels) has the class they were generated for, against what "
            "the labels alone give (chance) and what held-out images score among themselves "
            "(leave-one-out, the ceiling). Final grids: rows cycle through the classes; "
            "per-class grids are each run's samples/step_*_class_*.png. " + _timing(rows)
            + f"\n\n{sweep.markdown_table(rows, columns)}\n")


def _cell(text: str) -> tuple[str, str]:
    trunk, _, norm = text.partition(":")
    if trunk not in config_lib.TRUNKS or norm not in config_lib.NORMS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TRUNK:NORM with TRUNK in "
                                         f"{config_lib.TRUNKS}, NORM in {config_lib.NORMS}")
    return trunk, norm


def real_image_reference(args, root: pathlib.Path) -> dict[str, float]:
    """The SWD between the runs' held-out images and as many training images: what a
    perfect generator would score (the metric's own sampling noise)."""
    from experiments.gan import input_pipeline
    from experiments.gan import metrics as gan_metrics

    images, _ = input_pipeline.load_images(args.data, args.resolution, cache_dir=root / "cache")
    train, held_out = input_pipeline.split_held_out(images, args.eval_images, seed=0)
    return gan_metrics.sliced_wasserstein_distance(held_out, train[:len(held_out)], key=0)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.gan.sweep",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mixture = commands.add_parser("mixture", help="presets, k × p and r(x) on 2-D mixtures")
    mixture.add_argument("--seeds", type=int, default=3)
    mixture.add_argument("--steps", type=int, default=1500)
    mixture.add_argument("--width", type=int, default=128, help="MLP hidden width")
    mixture.add_argument("--batch-size", type=int, default=256)
    mixture.add_argument("--mixtures", nargs="+", default=list(config_lib.MIXTURES),
                         choices=config_lib.MIXTURES)
    mixture.add_argument("--ablation-mixture", default="ring", choices=config_lib.MIXTURES,
                         help="the mixture of the k × p and strategy rows")
    mixture.add_argument("--out", default="results/gan/mixture.md")
    celeba = commands.add_parser("celeba", help="the four presets on an image folder")
    celeba.add_argument("--steps", type=int, default=300)
    celeba.add_argument("--data", default=DEFAULT_CELEBA)
    celeba.add_argument("--resolution", type=int, default=64)
    celeba.add_argument("--base-channels", type=int, default=64)
    celeba.add_argument("--batch-size", type=int, default=64)
    celeba.add_argument("--eval-images", type=int, default=1000)
    celeba.add_argument("--presets", nargs="+", default=list(MAIN_PRESETS),
                        choices=config_lib.PRESETS)
    celeba.add_argument("--out", default="results/gan/celeba.md")
    architectures = commands.add_parser("architectures", help="trunk × norm on images")
    architectures.add_argument("--cells", nargs="+", type=_cell,
                               default=list(ARCHITECTURE_CELLS), metavar="TRUNK:NORM")
    architectures.add_argument("--eval-every", type=int, default=0,
                               help="evaluations during training (for --curve)")
    architectures.add_argument("--curve", action="store_true",
                               help="SWD against steps for dcgan bn vs self_mod")
    architectures.add_argument("--out", default="results/gan/architectures.md")
    ogan_parser = commands.add_parser("ogan", help="O-GAN: SWD and reconstruction error")
    ogan_parser.add_argument("--out", default="results/gan/ogan.md")
    conditional = commands.add_parser("conditional", help="conditional BN, per-class SWD")
    conditional.add_argument("--faces", default=DEFAULT_FACES,
                             help="the folder holding olivetti/ and the two face folders")
    conditional.add_argument("--out", default="results/gan/conditional.md")
    conditional.add_argument("--tasks", nargs="+", choices=CONDITIONAL_TASKS,
                             default=list(CONDITIONAL_TASKS), help="which labelled sets")
    for sub in (architectures, ogan_parser, conditional):
        sub.add_argument("--steps", type=int, default=2000)
        sub.add_argument("--data", default=DEFAULT_CELEBA)
        sub.add_argument("--resolution", type=int, default=64)
        sub.add_argument("--base-channels", type=int, default=64)
        sub.add_argument("--batch-size", type=int, default=64)
        sub.add_argument("--eval-images", type=int, default=1000)
        sub.add_argument("--seeds", type=sweep.parse_seeds, default=(0,))
    for sub in (mixture, celeba, architectures, ogan_parser, conditional):
        sub.add_argument("--workdir", default="runs/gan_sweep",
                         help="one sub-directory per run; finished runs are read back")
        sub.add_argument("--images", default=None,
                         help="copy the final sample plots here (default: beside --out)")
    args = parser.parse_args(argv)
    if args.images is None:
        args.images = str(pathlib.Path(args.out).parent)
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    host_memory.keep_freed_memory_and_say()
    commands = {"mixture": sweep_mixture, "celeba": sweep_celeba,
                "architectures": sweep_architectures, "ogan": sweep_ogan,
                "conditional": sweep_conditional}
    table = commands[args.command](args)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(sweep.run_command(main, "experiments.gan.sweep"))
