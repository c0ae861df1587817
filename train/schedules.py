"""Learning-rate schedules: a pure, jittable function from step to learning rate.

`make_schedule(config.optim, total_steps)` reads `optim.schedule`, `lr`, `warmup_steps`,
`decay_steps`, `min_lr_ratio` and `wsd_decay_fraction`; `train/optim.py` scales updates by it and
the loop calls it directly to log the learning rate.

Step convention: `schedule(s)` is the learning rate of the 0-based update `s` (optax's count: the
step, less the steps skipped for a non-finite loss, see train/step.py).
Every shape is written in terms of the update's 1-based number `n = s + 1`, so no step is
wasted at zero learning rate and the last update of a decay lands exactly on its floor:

  warmup:  lr * n / W for n <= W (W = warmup_steps), so the peak lr is used at s = W - 1.
           W = 0 means no warmup and behaves exactly as W = 1: the first update uses the peak.
  after:   with P = max(W, 1), D = decay_steps (total_steps when 0), floor = min_lr_ratio * lr
           and progress p = (n - P) / (D - P) clipped to [0, 1]:
    constant: lr
    cosine:   floor + (lr - floor) * (1 + cos(pi * p)) / 2
    linear:   floor + (lr - floor) * (1 - p)
    rsqrt:    lr * sqrt(P / n)                    (W = 0: lr / sqrt(n))
    wsd:      lr, then over the last wsd_decay_fraction * D updates up to n = D a linear
              decay to floor
  Cosine, linear and wsd reach the floor at s = D - 1 and stay there. If D <= P the decay
  takes a single step right after warmup.
"""

from typing import Callable

import jax.numpy as jnp
import optax

SCHEDULES = ('constant', 'cosine', 'linear', 'rsqrt', 'wsd')


def _warmup_factor(update_number: jnp.ndarray, warmup_steps: int) -> jnp.ndarray:
  """Linear ramp n / W, capped at 1; 1 everywhere when there is no warmup."""
  if warmup_steps <= 0:
    return jnp.ones_like(update_number)
  return jnp.minimum(1.0, update_number / warmup_steps)


def _progress(update_number: jnp.ndarray, start: float, length: float) -> jnp.ndarray:
  """Fraction of a phase [start, start + length] done after update n, clipped to [0, 1]."""
  if length <= 0:  # an empty phase is all done one update after it starts
    return (update_number > start).astype(jnp.float32)
  return jnp.clip((update_number - start) / length, 0.0, 1.0)


def _decay_factor_fn(optim_cfg, decay_steps: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Multiplier on the peak lr as a function of update number n (1 during warmup)."""
  name = optim_cfg.schedule
  peak_update = max(optim_cfg.warmup_steps, 1)  # update number n at which the lr peaks
  floor = optim_cfg.min_lr_ratio
  if name == 'constant':
    return jnp.ones_like
  if name == 'rsqrt':
    return lambda n: jnp.sqrt(peak_update / jnp.maximum(n, peak_update))
  if name == 'wsd':
    decay_length = optim_cfg.wsd_decay_fraction * decay_steps
    decay_start = decay_steps - decay_length
    return lambda n: 1.0 - (1.0 - floor) * _progress(n, decay_start, decay_length)
  decay_length = decay_steps - peak_update
  if name == 'cosine':
    return lambda n: floor + (1.0 - floor) * 0.5 * (
        1.0 + jnp.cos(jnp.pi * _progress(n, peak_update, decay_length)))
  if name == 'linear':
    return lambda n: floor + (1.0 - floor) * (1.0 - _progress(n, peak_update, decay_length))
  raise ValueError(f'unknown schedule {name!r}; validate_optim_config should have caught it')


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """The learning rate of the update at 0-based `step`, as described in the module docstring."""
  peak_lr = optim_cfg.lr
  warmup_steps = optim_cfg.warmup_steps
  decay_factor = _decay_factor_fn(optim_cfg, optim_cfg.decay_steps or total_steps)

  def schedule(step) -> jnp.ndarray:
    update_number = jnp.asarray(step, jnp.float32) + 1.0
    return peak_lr * _warmup_factor(update_number, warmup_steps) * decay_factor(update_number)

  return schedule
