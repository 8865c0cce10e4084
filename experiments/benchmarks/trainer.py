"""The trainer's loop: steps/s of each experiment's demo config, metrics pulled every step
against every `log_every` steps.

Each experiment's demo variant is trained twice in this process, from scratch in a temporary
workdir, through `launch.run_experiment` (the code users run): once with
`trainer.log_every=1`, which pulls every step's metrics to the host as the loop used to, so
no step overlaps the next; once with the demo's own `log_every`, where metrics stay on the
device in between. The figure is the steady-state rate that the trainer writes to
summary.json (compilation, the first step, evaluation and checkpoints excluded).
"""

import contextlib
import io
import pathlib
import tempfile

import launch
from experiments import EXPERIMENTS, load, trainer
from experiments.benchmarks import harness

# Steps per timed run (full, quick): enough for the steady state to dominate.
STEPS = {"sentence_similarity": (300, 60), "gan": (1500, 200), "sparse_lm": (200, 40)}


def train_and_read_summary(spec: str, workdir: pathlib.Path, overrides: list[str]) -> dict:
    """Trains `spec` in `workdir` with `--config.` overrides (output silenced); returns its
    summary.json."""
    with contextlib.redirect_stdout(io.StringIO()):
        launch.run_experiment(spec, ["--workdir", str(workdir),
                                     *(f"--config.{item}" for item in overrides)])
    return trainer.read_summary(workdir)


def run(report: harness.Report, quick: bool) -> None:
    """One group per experiment: pull every step (baseline) against every log_every steps."""
    for name in EXPERIMENTS:
        steps = STEPS.get(name, (200, 40))[1 if quick else 0]
        demo_log_every = load(name).get_config("demo").trainer.log_every
        common = [f"trainer.num_steps={steps}", f"trainer.checkpoint_every={steps}",
                  "trainer.eval_every=0", "trainer.progress_bar=false"]
        group = f"{name}:demo, {steps} steps"
        for log_every, label, baseline in ((1, "metrics pulled every step", True),
                                           (min(demo_log_every, steps),
                                            f"every {demo_log_every} steps", False)):
            with tempfile.TemporaryDirectory() as workdir:
                summary = train_and_read_summary(
                    f"{name}:demo", pathlib.Path(workdir),
                    [*common, f"trainer.log_every={log_every}"])
            rate = summary["steps_per_sec"]
            seconds = summary["wall_seconds"]
            row = harness.Row(group=group, impl=label, median_s=1.0 / rate,
                              compile_s=seconds["compilation"], repeats=1, baseline=baseline,
                              device=report.device,
                              extra={"steps_per_sec": rate, "wall_seconds": seconds})
            report.rows.append(row)
            print(f"  [{group}] {label}: {rate:.1f} steps/s (compile "
                  f"{seconds['compilation']:.2f} s)", flush=True)
    report.note("median column: seconds per steady-state step (1 / summary.json's "
                "steps_per_sec); compile: the step's compilation (persistent cache on)")
