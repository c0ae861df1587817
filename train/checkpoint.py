"""Checkpoints: one orbax `CheckpointManager` per run, in `<run_dir>/checkpoints/<step>/`.

A checkpoint holds two items:

  state  the `TrainState` (params, optimizer state, step, RNG, skipped-step count) as
         tensorstore arrays (orbax `StandardSave`), restored onto whatever shardings the target
         `ShapeDtypeStruct`s carry, so a run can resume on another mesh;
  meta   JSON: the step, the data position (the loader is a pure function of (seed, step), so
         this is the step again, stored so that a resume can be audited), the loop's own state
         (early stopping, the non-finite streak) and the run's config.

Nothing in a checkpoint is pickled or executed: the arrays are tensorstore, the rest is JSON.

Saves are asynchronous by default: `save` blocks while the arrays are copied off the device and
a background thread writes them. A save killed midway leaves a `<step>.orbax-checkpoint-tmp*`
folder that orbax never lists. `restore_latest` tries the newest checkpoint first and falls back
to older ones when one does not restore (truncated or deleted files); when it may write, it
removes half-written saves and moves damaged checkpoints to `<run_dir>/damaged_checkpoints/` (so
that later saves can reuse their step numbers), and says what it skipped in one line.

The run directory may be in a bucket (gs://): orbax then writes each save straight into
`<step>/` and marks it complete with a `commit_success.txt` (a bucket cannot rename a folder
atomically), so there a half-written save is a step folder without that file.
"""

import gc
import logging
import sys
import time
import warnings

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from errors import UserError
from storage import absolute, as_path, is_remote, move_tree
from train.run_dir import CHECKPOINTS  # under the run directory
from train.state import path_names

DAMAGED = 'damaged_checkpoints'  # under the run directory
INCOMPLETE_MARK = '.orbax-checkpoint-tmp'  # orbax's name for a save that did not finish
COMMITTED_MARK = 'commit_success.txt'  # in a bucket, orbax's mark of a finished save
META_FORMAT = 1


def open_manager(directory, checkpoint_cfg=None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The manager of `directory` (created unless read_only), keeping what `checkpoint_cfg` says."""
  options = {'read_only': read_only, 'create': not read_only}
  if read_only:
    options['save_interval_steps'] = 0
  if checkpoint_cfg is not None and not read_only:
    options['enable_async_checkpointing'] = bool(checkpoint_cfg.async_save)
    keep = policies.LatestN(n=int(checkpoint_cfg.keep))
    if checkpoint_cfg.keep_best:
      options.update(best_fn=_validation_loss, best_mode='min')
      best = policies.BestN(get_metric_fn=_validation_loss, reverse=True, n=1,
                            keep_checkpoints_without_metrics=False)
      options['preservation_policy'] = policies.AnyPreservationPolicy([keep, best])
    else:
      options['preservation_policy'] = keep
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # read_only is worth no warning
  try:
    return ocp.CheckpointManager(absolute(directory),
                                 options=ocp.CheckpointManagerOptions(**options),
                                 item_handlers={'state': ocp.StandardCheckpointHandler(),
                                                'meta': ocp.JsonCheckpointHandler()})
  finally:
    absl_logger.setLevel(level)


def _validation_loss(metrics: dict) -> float:
  return float(metrics['validation_loss'])


def make_meta(config, step: int, loop_state: dict) -> dict:
  """The JSON item saved with the state at `step`."""
  return {'format': META_FORMAT, 'step': int(step), 'data_position': int(step),
          'loop': dict(loop_state), 'config': config.to_dict()}


def save(manager: ocp.CheckpointManager, state, meta: dict,
         validation_loss: float | None = None) -> float:
  """Starts saving `state` at meta['step']; returns how long the caller was blocked (s)."""
  start = time.perf_counter()
  metrics = None
  if validation_loss is not None and validation_loss == validation_loss:  # not NaN
    metrics = {'validation_loss': float(validation_loss)}
  manager.save(int(meta['step']), metrics=metrics, force=True,
               args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                       meta=ocp.args.JsonSave(meta)))
  return time.perf_counter() - start


def read_meta(manager_or_dir, step: int) -> dict:
  """The JSON item of checkpoint `step`."""
  manager = _as_manager(manager_or_dir)
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def restore_latest(manager_or_dir, abstract_state, move_damaged: bool = False):
  """(state, step, message) from the newest checkpoint that restores cleanly.

  `abstract_state` is the state as `jax.ShapeDtypeStruct`s carrying the shardings to restore
  onto. Returns (None, None, None) when there is no checkpoint at all; `message` is one line
  saying what was skipped on the way, or None when the newest checkpoint restored. A
  checkpoint of another model (other shapes) is a `UserError`, as is a directory whose
  checkpoints are all damaged. With `move_damaged` (the training run, process 0 writes),
  half-written saves are deleted and damaged checkpoints moved aside.
  """
  manager = _as_manager(manager_or_dir)
  directory = as_path(manager.directory)
  incomplete = _incomplete_saves(directory)
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    state, why = _try_restore(manager, step, abstract_state)
    if state is None:
      damaged.append((step, why))
      continue
    notes = _skip(directory, incomplete, damaged, move_damaged)
    if notes and move_damaged:
      manager.reload()
    message = None
    if notes:
      message = f'resumed from checkpoint step {step} in {directory}: ' + '; '.join(notes)
    return state, step, message
  if damaged:
    newest, why = damaged[0]
    raise UserError(f'no checkpoint in {directory} restores cleanly (newest, step {newest}: '
                    f'{why}); delete {directory} or use another --run_dir')
  notes = _skip(directory, incomplete, [], move_damaged)
  return None, None, ('; '.join(notes) if notes else None)


def restore_step(manager_or_dir, step: int, abstract_state):
  """The state of checkpoint `step`; UserError if there is none or it does not restore."""
  manager = _as_manager(manager_or_dir)
  steps = sorted(manager.all_steps())
  if step not in steps:
    raise UserError(f'{manager.directory} has no checkpoint of step {step}; it has '
                    f'{", ".join(map(str, steps)) or "none"}')
  state, why = _try_restore(manager, step, abstract_state)
  if state is None:
    raise UserError(f'checkpoint step {step} in {manager.directory} does not restore ({why}); '
                    'pick another --step')
  return state


def _try_restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """(state, None), or (None, why) when the checkpoint is damaged; UserError if of another
  model. A failed tensorstore read leaves reads in flight and coroutines that complain on
  stderr when collected ('Exception ignored in ...'); the failure is handled, so they are let
  settle (up to half a second) and silenced."""
  hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
  why = None
  try:
    return _restore_step(manager, step, abstract_state), None
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # any failure means damaged
    why = _one_line(e)
  finally:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)  # "coroutine ... was never awaited"
      for _ in range(10 if why else 1):
        gc.collect()
        time.sleep(0.05 if why else 0)
    sys.unraisablehook = hook
  return None, why


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract_state):
  metadata = manager.item_metadata(step)
  if metadata is None or metadata.get('state') is None:
    raise ValueError('the state metadata is missing')
  check_same_shapes(metadata['state'], abstract_state, manager.directory / str(step))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  state, meta = restored['state'], restored['meta']
  if not isinstance(meta, dict) or meta.get('step') != step or meta.get('data_position') != step:
    raise ValueError(f'its meta item does not describe step {step}')
  if int(jax.device_get(state.step)) != step:
    raise ValueError(f'its state is at step {int(state.step)}, not {step}')
  return state


def _shapes(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'.'.join(path_names(path)): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves}


def check_same_shapes(metadata_tree, abstract_state, where) -> None:
  """UserError, naming one differing array, unless the checkpoint holds this model's state."""
  saved, wanted = _shapes(metadata_tree), _shapes(abstract_state)
  if saved == wanted:
    return
  for name in sorted(set(saved) | set(wanted)):
    if saved.get(name) != wanted.get(name):
      there = saved.get(name, 'nothing')
      here = wanted.get(name, 'nothing')
      raise UserError(f'the checkpoint {where} is of another model ({name}: {there} there, '
                      f'{here} in this config); use another --run_dir or delete it')


def _incomplete_saves(directory) -> list:
  """The folders of saves that did not finish (orbax lists none of them as a step)."""
  if not is_remote(directory):
    return sorted(p for p in directory.glob(f'*{INCOMPLETE_MARK}*') if p.is_dir())
  if not directory.exists():
    return []
  return sorted(p for p in directory.iterdir()
                if p.name.isdigit() and p.is_dir() and not (p / COMMITTED_MARK).exists())


def _skip(directory, incomplete: list, damaged: list[tuple[int, str]],
          move: bool) -> list[str]:
  """Notes on what was skipped; with `move`, deletes half-written saves and moves damaged
  checkpoints to <run_dir>/damaged_checkpoints/ (process 0 does the file work)."""
  targets = []
  for step, _ in damaged:
    target, suffix = directory.parent / DAMAGED / str(step), 1
    while target.exists():
      target, suffix = directory.parent / DAMAGED / f'{step}-{suffix}', suffix + 1
    targets.append(target)
  if move and jax.process_index() == 0:
    for path in incomplete:
      path.rmtree(missing_ok=True)
    for (step, _), target in zip(damaged, targets):
      move_tree(directory / str(step), target)
  if move and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices('checkpoint_clean_up')
  verb = 'removed' if move else 'ignored'
  notes = [f'{verb} a half-written save ({p.name})' for p in incomplete]
  for (step, why), target in zip(damaged, targets):
    notes.append(f'step {step} does not restore ({why})' + (f', moved to {target}' if move else ''))
  return notes


def _as_manager(manager_or_dir) -> ocp.CheckpointManager:
  if isinstance(manager_or_dir, ocp.CheckpointManager):
    return manager_or_dir
  directory = as_path(manager_or_dir)
  if not directory.is_dir():
    raise UserError(f'{directory} holds no checkpoints; train first or pass the run directory')
  return open_manager(directory, read_only=True)


def _one_line(error: BaseException) -> str:
  """The root cause of `error` (e.g. tensorstore's 'OUT_OF_RANGE: ...') on one short line."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 160 else text[:157] + '...'


def checkpoint_dir(run_dir):
  return as_path(run_dir) / CHECKPOINTS


def latest_step(manager_or_dir) -> int | None:
  return _as_manager(manager_or_dir).latest_step()

