"""Joins the processes of a multi-host run (`jax.distributed`), before anything touches devices.

`config.distributed.coordinator` says how:
- 'auto' (default): on a TPU pod slice, under SLURM (`srun`), Open MPI or in a Kubernetes TPU
  job with more than one process, let `jax.distributed.initialize()` find its peers from the
  environment; anywhere else stay a single process;
- 'none': a single process, whatever the environment;
- 'HOST:PORT': the address of process 0, with `num_processes` and `process_id` set (every
  process gets the same address and count and its own id).

A peer that never arrives makes the JAX runtime abort the process (SIGABRT, no exception), so
a watchdog reports it first: after `timeout_s` it prints one line naming the fix and exits with
status 3. Afterwards every process sees all devices of the run; `jax.process_index()` tells
them apart, and only process 0 writes logs (`train/loop.py`).
"""

import os
import sys
import threading

import jax

from errors import EXIT_PEERS_TIMEOUT, UserError

_GRACE_S = 30  # the runtime's own deadline comes this much after ours


def detected_cluster() -> tuple[str, int] | None:
  """(name, process count) of a multi-process environment jax can join by itself, or None."""
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel
    kinds = clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
    candidates = [env for env in kinds if not env.opt_in_only_method]
  except (ImportError, AttributeError):  # private API moved: fall back to SLURM's variables
    count = int(os.environ.get('SLURM_NTASKS', '1'))
    return ('slurm', count) if count > 1 and 'SLURM_PROCID' in os.environ else None
  for env in candidates:
    try:
      if env.is_env_present():
        count = env.get_process_count()
        return (getattr(env, 'name', env.__name__), count) if count > 1 else None
    except Exception:  # pylint: disable=broad-except  # a half-present environment: ignore it
      continue
  return None


def _arguments(dist_cfg) -> dict | None:
  """jax.distributed.initialize's arguments for `dist_cfg`, or None for a single process."""
  coordinator = str(dist_cfg.coordinator).strip()
  if coordinator in ('none', ''):
    return None
  if coordinator == 'auto':
    return {} if detected_cluster() else None
  if ':' not in coordinator:
    raise UserError(f'distributed.coordinator={coordinator!r} is not auto, none or HOST:PORT; '
                    'give the address of process 0, e.g. 10.0.0.2:8476')
  count, index = int(dist_cfg.num_processes), int(dist_cfg.process_id)
  if count < 1 or not 0 <= index < count:
    raise UserError(f'distributed.coordinator={coordinator} needs num_processes >= 1 and '
                    f'0 <= process_id < num_processes (got {count} and {index}); set both')
  return dict(coordinator_address=coordinator, num_processes=count, process_id=index)


def _watchdog(timeout_s: float, what: str) -> threading.Timer:
  def give_up():
    print(f'error: {what} did not come together within {timeout_s:g}s; start every process '
          '(same coordinator and num_processes, each its own process_id), check that process 0 '
          'is reachable at the address, or raise distributed.timeout_s', file=sys.stderr,
          flush=True)
    os._exit(EXIT_PEERS_TIMEOUT)  # pylint: disable=protected-access
  timer = threading.Timer(timeout_s, give_up)
  timer.daemon = True
  return timer


def initialize(dist_cfg) -> bool:
  """Joins the run's processes if `dist_cfg` asks for several; True if it did."""
  arguments = _arguments(dist_cfg)
  if arguments is None or jax.distributed.is_initialized():
    return False
  timeout_s = float(dist_cfg.timeout_s)
  if timeout_s <= 0:
    raise UserError(f'distributed.timeout_s={dist_cfg.timeout_s} must be positive')
  if arguments:
    what = (f"process {arguments['process_id']} of {arguments['num_processes']} "
            f"(coordinator {arguments['coordinator_address']})")
  else:
    name, count = detected_cluster()
    what = f'the {count} processes of this {name} job'
  timer = _watchdog(timeout_s, what)
  timer.start()
  try:
    jax.distributed.initialize(**arguments, initialization_timeout=int(timeout_s) + _GRACE_S)
  except (RuntimeError, ValueError) as e:
    reason = ' '.join(str(e).split())[:200]
    raise UserError(f'{what} could not join the others ({reason}); check config.distributed') from e
  finally:
    timer.cancel()
  return True
