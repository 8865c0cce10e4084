"""Every experiment's smoke config trains in bfloat16 with a falling loss; parameters and
optimizer state stay float32."""

import json

import numpy as np
import pytest

import launch
from experiments import trainer

SMOKE_RUNS = {
    "sentence_similarity": ["--config.trainer.num_steps=40"],
    "gan": ["--config.trainer.num_steps=40"],
    "sparse_lm": ["--config.trainer.num_steps=24"],
}


@pytest.mark.parametrize("name", sorted(SMOKE_RUNS))
def test_smoke_trains_in_bfloat16_with_falling_loss(tmp_path, name):
    workdir = tmp_path / name
    assert launch.main([f"{name}:smoke", "--workdir", str(workdir),
                        "--config.trainer.compute_dtype=bfloat16", *SMOKE_RUNS[name]]) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert len(losses) >= 3 and all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses
    summary = trainer.read_summary(workdir)
    assert summary["compute_dtype"] == "bfloat16"
    assert json.loads((workdir / "config.json").read_text())["trainer"]["compute_dtype"] == (
        "bfloat16")
    # What is stored stays float32: only the computation is in bfloat16 (the checkpoint's
    # meta records every leaf's shape and dtype).
    checkpoints = workdir / "checkpoints"
    step = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    meta = json.loads((checkpoints / str(step) / "meta" / "metadata").read_text())
    leaves = meta["fingerprint"]["state_shapes"]
    assert leaves and not any("bfloat16" in leaf for leaf in leaves)
    assert any(leaf.endswith("float32") for leaf in leaves)
