"""Joins the processes of a multi-host run (`jax.distributed`), before anything touches devices.

`config.distributed.coordinator` says how:
- 'auto' (default): when a launcher started several processes, call the public
  `jax.distributed.initialize()` with no arguments, which finds the coordinator, count and id
  itself; anywhere else stay a single process. The launchers are recognised by the variables
  they document (`LAUNCHERS`): SLURM (`srun`), Open MPI (`mpirun`), a Kubernetes (GKE) TPU job,
  and `launch.py pod` on a Cloud TPU VM slice (whose worker list only the TPU metadata server
  holds: the pod launcher marks its processes with `POD_MARKER`, and jax reads the rest);
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


POD_MARKER = 'LAUNCH_POD_WORKER'  # set by `launch.py pod` (sharding/pod.py) on every worker


def _slurm(env) -> int:
  needed = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
            'SLURM_LOCALID')  # what jax.distributed reads under SLURM
  return int(env['SLURM_NTASKS']) if all(name in env for name in needed) else 0


def _open_mpi(env) -> int:
  has_uri = 'OMPI_MCA_orte_hnp_uri' in env  # the coordinator address jax reads
  return int(env.get('OMPI_COMM_WORLD_SIZE', '0')) if has_uri else 0


def _gke_tpu(env) -> int:
  return len([h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h.strip()])


def _tpu_pod(env) -> int:
  return -1 if env.get(POD_MARKER) else 0  # -1: every worker; jax asks the metadata server


# (name, process count it started: 0 if not it) for the launchers `jax.distributed.initialize()`
# with no arguments can join, detected from the variables they set in every process.
LAUNCHERS = (('slurm', _slurm), ('open mpi', _open_mpi), ('kubernetes tpu', _gke_tpu),
             ('cloud tpu pod', _tpu_pod))


def detected_cluster(env=None) -> tuple[str, int] | None:
  """(launcher, process count) of a multi-process launch that jax can join by itself, or None.

  Public API only: jax's own cluster detection is private, so the launchers are
  recognised here by their documented variables. A count of -1 means every worker of a TPU pod
  slice (`launch.py pod`), which jax counts itself.
  """
  env = os.environ if env is None else env
  for name, count_of in LAUNCHERS:
    try:
      count = count_of(env)
    except ValueError:  # a malformed count: not a launch jax could join either
      continue
    if count > 1 or count == -1:
      return name, count
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
    what = f'the {count} processes of this {name} job' if count > 0 else f'the {name} workers'
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
