"""Learning-rate schedules shared by the experiments (optax schedules, step -> rate)."""

import optax


def warmup_cosine(peak: float, num_steps: int, warmup_steps: int, end_fraction: float
                  ) -> optax.Schedule:
    """Linear warm-up from 0 to `peak`, then cosine decay to `end_fraction · peak` at
    `num_steps` (the warm-up is shortened to fit a run shorter than it)."""
    warmup = min(warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1), end_value=peak * end_fraction)


def warmup_decay_constant(peak: float, warmup_steps: int, decay_steps: int,
                          final: float) -> optax.Schedule:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, linear decay to `final` over the
    next `decay_steps`, then `final` for ever.

    The schedule of the NL2SQL fine-tuning (docs/nl2sql.md): a warm-up so the freshly
    initialised heads do not wreck the pre-trained encoder, a decay, then a small constant
    rate for as long as training goes on.
    """
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
         optax.linear_schedule(peak, final, max(decay_steps, 1)),
         optax.constant_schedule(final)],
        boundaries=[max(warmup_steps, 1), max(warmup_steps, 1) + max(decay_steps, 1)])


SCHEDULES = {"warmup_cosine": warmup_cosine, "warmup_decay_constant": warmup_decay_constant}
