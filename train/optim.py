"""The optimizer: gradient clipping, an update direction, weight decay and the lr schedule.

`make_optimizer(config.optim, total_steps)` checks the `optim` section, then returns one
`optax.chain`:

  clip_by_global_norm(clip_norm)         if clip_norm > 0
  <direction of optim.name>              see below
  scale_by_multipliers(lr_multipliers)   muP's per-parameter learning rates (train/mup.py)
  add_decayed_weights(wd, decay_mask)    if weight_decay > 0 and the optimizer decays
  scale_by_learning_rate(schedule)       train/schedules.py; flips the sign for descent

`optim.b2 = 0` (the default) means the b2 its optimizer is known by: 0.95 for adam and adamw
(GPT-3, Llama), 0.99 for lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms");
see `beta2`. Any other value is used as given.

Directions: adamw and adam use Adam's bias-corrected moments (b1, b2, eps); sgd uses the
gradient itself; momentum uses the heavy-ball trace v = momentum * v + g; nesterov uses
g + momentum * v; lion uses sign(b1 * m + (1 - b1) * g) with m = b2 * m + (1 - b2) * g; adafactor
uses optax's factored second moments with its usual settings, written out in `_adafactor`.

Weight decay is decoupled everywhere it applies (every optimizer but adam): `wd * param` is
added after the direction, so it never enters a moment or momentum buffer, and is scaled by
the scheduled lr with the rest of the update (param -= lr(t) * (direction + wd * param)), as in
AdamW. `decay_mask` decides by what a parameter is, read from its name (the last key of its
path): matrices (`kernel`, `embedding`, `position_embedding`) are decayed, norm scales and
biases (`scale`, `bias`) only with `optim.decay_norms_and_biases`. Not by rank: under
`model.scan_layers` a norm scale is [layers, d] and a Q/K/V bias is [heads, head_dim]. A name in
neither list is an error, so a new kind of parameter must be placed in one. `adam` ignores
`weight_decay`; use `adamw` for decay.

Both the mask and adafactor need the params: call `tx.update(grads, opt_state, params)`.

L1 and L2 penalties (`optim.l1`, `optim.l2`) are the other, coupled kind of regularisation:
`penalty(params) = l1 * sum|w| + l2 * sum w^2` over the parameters `is_decayed` selects, added
to the loss the gradient is taken of (train/step.py), so they do pass through Adam's moments.
`penalty_and_grads` gives its value and gradient, `l1 * sign(w) + 2 * l2 * w` (0 at w = 0 for
L1: a pruned weight feels no pull).
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from errors import UserError
from train.mup import scale_by_multipliers
from train.schedules import SCHEDULES, make_schedule
from train.state import path_names

Params = Any  # a pytree (nested dicts) of jax arrays


DEFAULT_B2 = {'adam': 0.95, 'adamw': 0.95, 'lion': 0.99}  # what optim.b2 = 0 stands for


def beta2(optim_cfg) -> float:
  """`optim.b2`, or the default of `optim.name` (DEFAULT_B2) when it is 0 (not set)."""
  return optim_cfg.b2 or DEFAULT_B2.get(optim_cfg.name, 0.0)


def _adam(optim_cfg) -> optax.GradientTransformation:
  return optax.scale_by_adam(b1=optim_cfg.b1, b2=beta2(optim_cfg), eps=optim_cfg.eps)


def _sgd(optim_cfg) -> optax.GradientTransformation:
  del optim_cfg
  return optax.identity()


def _momentum(optim_cfg) -> optax.GradientTransformation:
  return optax.trace(decay=optim_cfg.momentum, nesterov=False)


def _nesterov(optim_cfg) -> optax.GradientTransformation:
  return optax.trace(decay=optim_cfg.momentum, nesterov=True)


def _lion(optim_cfg) -> optax.GradientTransformation:
  return optax.scale_by_lion(b1=optim_cfg.b1, b2=beta2(optim_cfg))


def _adafactor(optim_cfg) -> optax.GradientTransformation:
  """optax.adafactor's direction, settings spelled out, without its lr, decay and sign steps.

  Second moments are factored for matrices whose two largest dims are both >= 128, and decay
  as 1 - (t + 1)^-0.8 (t: 0-based step), so the first update of every param is g / |g| up to
  eps = 1e-30. Each param's update is then clipped to rms 1. There is no momentum and no
  multiplication by the param's rms, so `optim.lr` is an absolute step size, as for Adam.
  `optim.eps`, `b1` and `b2` are Adam's and are not used here.
  """
  del optim_cfg
  return optax.chain(
      optax.scale_by_factored_rms(
          factored=True, decay_rate=0.8, min_dim_size_to_factor=128, epsilon=1e-30),
      optax.clip_by_block_rms(threshold=1.0),
  )


DIRECTIONS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    'adamw': _adam,
    'adam': _adam,
    'sgd': _sgd,
    'momentum': _momentum,
    'nesterov': _nesterov,
    'lion': _lion,
    'adafactor': _adafactor,
}
OPTIMIZERS = tuple(DIRECTIONS)
WITHOUT_WEIGHT_DECAY = ('adam',)


DECAYED_PARAMS = ('kernel', 'embedding', 'position_embedding')  # matrices, whatever their rank
NORMS_AND_BIASES = ('scale', 'bias')


def is_decayed(path: tuple[str, ...], decay_norms_and_biases: bool = False) -> bool:
  """Whether the parameter at `path` (e.g. ('layers', 'attn', 'query', 'bias')) is decayed."""
  name = path[-1]
  if name in DECAYED_PARAMS:
    return True
  if name in NORMS_AND_BIASES:
    return decay_norms_and_biases
  raise ValueError(f"parameter {'/'.join(path)}: weight decay knows {DECAYED_PARAMS} (decayed) "
                   f'and {NORMS_AND_BIASES} (not decayed); add {name!r} to one of them in '
                   'train/optim.py')


def decay_mask(params: Params, decay_norms_and_biases: bool = False) -> Params:
  """True for the params that get weight decay (`is_decayed` of each one's key path)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: is_decayed(path_names(path), decay_norms_and_biases), params)


def penalty_and_grads(params: Params, l1: float, l2: float,
                      decay_norms_and_biases: bool = False) -> tuple[jax.Array, Params]:
  """(l1 * sum|w| + l2 * sum w^2, its gradient) over the params `decay_mask` selects."""
  mask = decay_mask(params, decay_norms_and_biases)
  selected = [w for w, on in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if on]
  value = sum(l1 * jnp.sum(jnp.abs(w)) + l2 * jnp.sum(jnp.square(w)) for w in selected)
  grads = jax.tree.map(lambda w, on: (l1 * jnp.sign(w) + 2 * l2 * w) if on else jnp.zeros_like(w),
                       params, mask)
  return jnp.asarray(value, jnp.float32), grads


def make_penalty(optim_cfg):
  """penalty(params) -> (value, grads) for train/step.py, or None when l1 and l2 are 0."""
  if optim_cfg.l1 == 0 and optim_cfg.l2 == 0:
    return None
  return functools.partial(penalty_and_grads, l1=optim_cfg.l1, l2=optim_cfg.l2,
                           decay_norms_and_biases=optim_cfg.decay_norms_and_biases)


def _unit_interval_problem(optim_cfg, key: str) -> list[str]:
  value = optim_cfg[key]
  return [] if 0.0 <= value < 1.0 else [
      f'optim.{key}={value} must be in [0, 1); set --config.optim.{key} to e.g. 0.9']


def problems(optim_cfg) -> list[str]:
  """Every bad value in the `optim` section, each in one line naming the fix."""
  o = optim_cfg
  checks = [
      (o.name in OPTIMIZERS, f"optim.name={o.name!r} is not one of {', '.join(OPTIMIZERS)}; "
       'pick one'),
      (o.schedule in SCHEDULES, f"optim.schedule={o.schedule!r} is not one of "
       f"{', '.join(SCHEDULES)}; pick one"),
      (o.lr > 0, f'optim.lr={o.lr} must be > 0; set --config.optim.lr to e.g. 1e-3'),
      (o.weight_decay >= 0, f'optim.weight_decay={o.weight_decay} must be >= 0; '
       'set --config.optim.weight_decay=0 to turn it off'),
      (o.l1 >= 0 and o.l2 >= 0, f'optim.l1={o.l1} and optim.l2={o.l2} must be >= 0; set '
       'them to 0 to turn the penalties off'),
      (o.eps > 0, f'optim.eps={o.eps} must be > 0; set --config.optim.eps to e.g. 1e-8'),
      (o.warmup_steps >= 0, f'optim.warmup_steps={o.warmup_steps} must be >= 0; '
       'set --config.optim.warmup_steps=0 for no warmup'),
      (o.decay_steps >= 0, f'optim.decay_steps={o.decay_steps} must be >= 0; '
       'set --config.optim.decay_steps=0 to decay over train.steps'),
      (o.clip_norm >= 0, f'optim.clip_norm={o.clip_norm} must be >= 0; '
       'set --config.optim.clip_norm=0 to turn clipping off'),
      (0.0 <= o.min_lr_ratio <= 1.0, f'optim.min_lr_ratio={o.min_lr_ratio} must be in '
       '[0, 1]; set --config.optim.min_lr_ratio to e.g. 0.1'),
      (0.0 < o.wsd_decay_fraction <= 1.0, f'optim.wsd_decay_fraction={o.wsd_decay_fraction} '
       'must be in (0, 1]; set --config.optim.wsd_decay_fraction to e.g. 0.2'),
  ]
  found = [message for ok, message in checks[:4] if not ok]
  for key in ('b1', 'b2', 'momentum'):
    found += _unit_interval_problem(o, key)
  return found + [message for ok, message in checks[4:] if not ok]


def validate_optim_config(optim_cfg) -> None:
  """Raises UserError with the first of `problems(optim_cfg)`."""
  found = problems(optim_cfg)
  if found:
    raise UserError(found[0])


def make_optimizer(optim_cfg, total_steps: int,
                   lr_multipliers: Params | None = None) -> optax.GradientTransformation:
  """The optax chain described in the module docstring, after `validate_optim_config`;
  `lr_multipliers` (train/mup.py, None under SP) scales each parameter's update."""
  validate_optim_config(optim_cfg)
  steps = []
  if optim_cfg.clip_norm > 0:
    steps.append(optax.clip_by_global_norm(optim_cfg.clip_norm))
  steps.append(DIRECTIONS[optim_cfg.name](optim_cfg))
  if lr_multipliers is not None:
    steps.append(scale_by_multipliers(lr_multipliers))
  if optim_cfg.weight_decay > 0 and optim_cfg.name not in WITHOUT_WEIGHT_DECAY:
    mask = functools.partial(
        decay_mask, decay_norms_and_biases=optim_cfg.decay_norms_and_biases)
    steps.append(optax.add_decayed_weights(optim_cfg.weight_decay, mask=mask))
  steps.append(optax.scale_by_learning_rate(make_schedule(optim_cfg, total_steps)))
  return optax.chain(*steps)
