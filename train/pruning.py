"""Magnitude pruning: the smallest weights of every projection matrix set to zero, at once or on
a schedule during training (Zhu & Gupta 2017, "To prune, or not to prune").

Which weights: the `kernel` of every projection (attention, MLP, an untied output layer), each
matrix pruned to the same sparsity on its own (under `model.scan_layers`, each layer's slice on
its own). The embedding table and norms/biases stay dense. A matrix at sparsity s has exactly
round(s * size) zeros: the weights of smallest |w| (ties broken by position).

During training (`prune.sparsity > 0`), the sparsity after update number t (1-based) is the
cubic schedule of Zhu & Gupta with initial sparsity 0,

    s(t) = s_f * (1 - (1 - (t_k - t_0) / (t_end - t_0))^3),

where t_k is the last pruning point at or before t: t_0, t_0 + every, ..., and t_end itself
(s = 0 before t_0, s_f from t_end on; t_end = t_0 prunes to s_f at once). At a pruning point
the matrices are pruned to s(t) after the update; after every other update the weights that are
zero before it are set back to zero, so pruned weights stay pruned. The mask is the set of zero
weights itself: nothing new goes into the train state or the checkpoint.

`launch.py prune` (tools/compress.py) prunes a trained run once and writes a new run directory.
"""

import jax
import jax.numpy as jnp

from errors import UserError
from train.state import path_names

PRUNED_PARAMS = ('kernel',)


def is_pruned(path: tuple[str, ...]) -> bool:
  return path[-1] in PRUNED_PARAMS


def prune_matrix(w: jax.Array, sparsity) -> jax.Array:
  """`w` with its round(sparsity * size) smallest-magnitude entries set to zero."""
  flat = w.reshape(-1)
  n_zero = jnp.round(sparsity * flat.size).astype(jnp.int32)
  order = jnp.argsort(jnp.abs(flat), stable=True)
  keep = jnp.ones(flat.shape, bool).at[order].set(jnp.arange(flat.size) >= n_zero)
  return jnp.where(keep, flat, 0).astype(w.dtype).reshape(w.shape)


def _map_pruned(fn, params):
  """fn(w) on every pruned matrix (per layer slice under scan), other params unchanged."""
  def one(path, w):
    names = path_names(path)
    if not is_pruned(names):
      return w
    return jax.vmap(fn)(w) if names[0] == 'layers' else fn(w)
  return jax.tree_util.tree_map_with_path(one, params)


def prune_params(params, sparsity):
  """Every pruned matrix at `sparsity` (a float or a traced scalar)."""
  return _map_pruned(lambda w: prune_matrix(w, sparsity), params)


def sparsity_of(params) -> float:
  """The fraction of zeros over all pruned matrices."""
  leaves = [w for path, w in jax.tree_util.tree_flatten_with_path(params)[0]
            if is_pruned(path_names(path))]
  zeros = sum(int(jnp.sum(w == 0)) for w in leaves)
  return zeros / max(sum(w.size for w in leaves), 1)


def end_step(prune_cfg, total_steps: int) -> int:
  return prune_cfg.end_step or total_steps


def scheduled_sparsity(update, prune_cfg, total_steps: int):
  """s(t) of the module docstring for update number `update` (1-based; int or traced)."""
  start, end, every = prune_cfg.start_step, end_step(prune_cfg, total_steps), prune_cfg.every
  reached = jnp.minimum(update, end)
  last_point = jnp.where(update >= end, end, start + (reached - start) // every * every)
  fraction = 1.0 if end == start else (last_point - start) / (end - start)
  sparsity = prune_cfg.sparsity * (1.0 - (1.0 - fraction) ** 3)
  return jnp.where(update < start, 0.0, sparsity)


def is_pruning_point(update, prune_cfg, total_steps: int):
  start, end = prune_cfg.start_step, end_step(prune_cfg, total_steps)
  on_grid = (update - start) % prune_cfg.every == 0
  return (update >= start) & (update <= end) & (on_grid | (update == end))


def make_prune_fn(prune_cfg, total_steps: int):
  """prune(new_params, old_params, step) for train/step.py, or None when pruning is off."""
  if prune_cfg.sparsity == 0:
    return None

  def prune(new_params, old_params, step):
    kept = jax.tree.map(
        lambda new, old, on: jnp.where(old == 0, 0, new).astype(new.dtype) if on else new,
        new_params, old_params, pruned_mask(new_params))
    update = step + 1
    return jax.lax.cond(is_pruning_point(update, prune_cfg, total_steps),
                        lambda p: prune_params(p, scheduled_sparsity(update, prune_cfg,
                                                                     total_steps)),
                        lambda p: p, kept)
  return prune


def pruned_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: is_pruned(path_names(path)), params)


def problems(prune_cfg, total_steps: int) -> list[str]:
  """Bad values of the `prune` section, one line each naming the fix."""
  p, found = prune_cfg, []
  if not 0.0 <= p.sparsity < 1.0:
    found.append(f'prune.sparsity={p.sparsity} must be in [0, 1); 0 turns pruning off')
  if p.every < 1:
    found.append(f'prune.every={p.every} must be at least 1 (steps between pruning points)')
  if p.start_step < 0 or not p.start_step <= end_step(p, total_steps):
    found.append(f'prune.start_step={p.start_step} must be in [0, prune.end_step='
                 f'{end_step(p, total_steps)}]; lower it or raise prune.end_step')
  return found


def check_sparsity(sparsity: float) -> None:
  if not 0.0 < sparsity < 1.0:
    raise UserError(f'--sparsity={sparsity} must be in (0, 1), e.g. 0.5 for half the weights')
