"""Learning-rate schedules against hand-computed values."""

import numpy as np
import pytest

from experiments import schedules


def test_warmup_decay_constant_matches_the_piecewise_linear_definition():
    schedule = schedules.warmup_decay_constant(5e-5, warmup_steps=100, decay_steps=100,
                                               final=1e-5)
    expected = {0: 0.0, 50: 2.5e-5, 100: 5e-5, 150: 3e-5, 200: 1e-5, 10_000: 1e-5}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, rel=1e-6, abs=1e-12), step


def test_warmup_cosine_peaks_then_ends_at_its_fraction():
    schedule = schedules.warmup_cosine(1e-3, num_steps=1000, warmup_steps=100,
                                       end_fraction=0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(100)) == pytest.approx(1e-3)
    halfway = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + np.cos(np.pi * 0.5))
    assert float(schedule(550)) == pytest.approx(halfway, rel=1e-5)
    assert float(schedule(1000)) == pytest.approx(1e-4)
    # A run shorter than the warm-up still reaches the peak before its last step.
    short = schedules.warmup_cosine(1e-3, num_steps=10, warmup_steps=100, end_fraction=0.0)
    assert float(short(9)) == pytest.approx(1e-3)
