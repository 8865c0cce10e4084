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
from experiments import DEMOS, load, trainer
from experiments.benchmarks import harness

ROUNDS = 2  # alternating runs of each setting; the fastest of each is kept
# Steps per timed run (full, quick): enough for the steady state to dominate.
STEPS = {"sentence_similarity": (300, 60), "gan": (1500, 200), "sparse_lm": (200, 40),
         "entity_linking": (200, 40), "headlines": (200, 40), "nl2sql": (200, 40)}


def train_and_read_summary(spec: str, workdir: pathlib.Path, overrides: list[str]) -> dict:
    """Trains `spec` in `workdir` with `--config.` overrides (output silenced); returns its
    summary.json."""
    with contextlib.redirect_stdout(io.StringIO()):
        launch.run_experiment(spec, ["--workdir", str(workdir),
                                     *(f"--config.{item}" for item in overrides)])
    return trainer.read_summary(workdir)


def run(report: harness.Report, quick: bool) -> None:
    """One group per experiment: pull every step (baseline) against every log_every steps.

    The two settings alternate, `ROUNDS` times each, and each keeps its fastest round: the
    machine is shared, and the first run of a process also warms caches the others reuse.
    """
    rounds = 1 if quick else ROUNDS
    for name in DEMOS:
        steps = STEPS.get(name, (200, 40))[1 if quick else 0]
        demo_log_every = load(name).get_config("demo").trainer.log_every
        common = [f"trainer.num_steps={steps}", f"trainer.checkpoint_every={steps}",
                  "trainer.eval_every=0", "trainer.progress_bar=false"]
        group = f"{name}:demo, {steps} steps"
        settings = ((1, "log_every=1: metrics pulled (and written) every step", True),
                    (min(demo_log_every, steps), f"log_every={demo_log_every}", False))
        best: dict[str, dict] = {}
        for _ in range(rounds):
            for log_every, label, _ in settings:
                with tempfile.TemporaryDirectory() as workdir:
                    summary = train_and_read_summary(
                        f"{name}:demo", pathlib.Path(workdir),
                        [*common, f"trainer.log_every={log_every}"])
                if label not in best or summary["steps_per_sec"] > best[label]["steps_per_sec"]:
                    best[label] = summary
        for _, label, baseline in settings:
            summary = best[label]
            rate, seconds = summary["steps_per_sec"], summary["wall_seconds"]
            report.rows.append(harness.Row(
                group=group, impl=label, median_s=1.0 / rate, compile_s=seconds["compilation"],
                repeats=rounds, baseline=baseline, device=report.device,
                extra={"steps_per_sec": rate, "wall_seconds": seconds}))
            print(f"  [{group}] {label}: {rate:.1f} steps/s (compile "
                  f"{seconds['compilation']:.2f} s)", flush=True)
    report.note("median column: seconds per steady-state step, 1 / summary.json's "
                f"steps_per_sec, the fastest of {rounds} alternating round(s); compile: the "
                "run's compilation, from JAX's persistent cache after the first round")
