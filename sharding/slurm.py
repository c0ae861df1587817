"""The SLURM batch script of a training run on GPU nodes, as text: `launch.py slurm` writes it.

Pure functions, no I/O: `mesh_overrides` picks the mesh for the job's layout and checks it
against the GPUs the job asks for, `srun_command` is the step that starts the processes, and
`batch_script` the whole `sbatch` file. `sharding/slurm_cli.py` reads the flags, writes the file
and calls `sbatch`.

Two layouts (`tasks_per_node`):
- 1 (default): one process per node driving all of its GPUs. jax, seeing SLURM, would restrict
  each process to the GPU numbered by its SLURM_LOCALID (one GPU per process), so the script
  sets JAX_LOCAL_DEVICE_IDS to all of them. `mesh.dcn_data` = the node count: 'data' spans the
  nodes over the slow network, fsdp/tensor stay inside a node (NVLink).
- gpus_per_node: one process per GPU; jax gives process SLURM_LOCALID that GPU. Devices are
  ordered host by host, so `mesh.dcn_data` stays 1 and a leading 'data' axis still spans nodes.

`srun` sets the SLURM_* variables in every process; `sharding/distributed.py` sees them and
`jax.distributed.initialize()` reads coordinator (first node), process count and id from them.
"""

import dataclasses
import shlex

from errors import EXIT_PREEMPTED, UserError
from sharding.mesh import resolve_mesh_shape

CPUS_PER_GPU = 8  # default CPU cores per GPU a task drives (data loading, host-side work)


@dataclasses.dataclass(frozen=True)
class Job:
  """What the batch script asks SLURM for and runs."""
  nodes: int
  gpus_per_node: int = 8
  tasks_per_node: int = 1
  cpus_per_task: int = 0  # 0: CPUS_PER_GPU per GPU of a task
  job_name: str = 'train'
  workdir: str = '.'
  python: str = '.venv/bin/python'
  train_args: tuple[str, ...] = ()  # after `launch.py train`
  log_dir: str = '.'
  time: str | None = None
  partition: str | None = None
  account: str | None = None
  sbatch_options: tuple[str, ...] = ()  # extra `#SBATCH` lines, e.g. --constraint=a100
  env: tuple[tuple[str, str], ...] = ()  # exported before srun
  signal_s: int = 120  # SIGTERM this long before the time limit: the run saves and exits 75
  max_requeues: int = 20  # the script requeues an exit 75 this many times at most

  @property
  def cpus(self) -> int:
    return self.cpus_per_task or CPUS_PER_GPU * (self.gpus_per_node // self.tasks_per_node)


def override_key(override: str) -> str:
  """'mesh.dcn_data' of '--config.mesh.dcn_data=4'."""
  return override[len('--config.'):].split('=', 1)[0]


def check_layout(job: Job) -> None:
  if job.nodes < 1:
    raise UserError(f'--nodes={job.nodes}: a job needs at least one node; set --nodes >= 1')
  if job.gpus_per_node < 1:
    raise UserError(f'--gpus_per_node={job.gpus_per_node} must be >= 1')
  if job.tasks_per_node not in (1, job.gpus_per_node):
    raise UserError(f'--tasks_per_node={job.tasks_per_node} must be 1 (one process per node) or '
                    f'{job.gpus_per_node} (one per GPU, = --gpus_per_node)')
  if job.cpus_per_task < 0 or job.signal_s < 0 or job.max_requeues < 0:
    raise UserError('--cpus_per_task, --signal_s and --max_requeues must be >= 0')
  sbatch_values = {'--job_name': job.job_name, '--time': job.time, '--partition': job.partition,
                   '--account': job.account, '--log_dir': job.log_dir}
  for flag, value in sbatch_values.items():
    if value is not None and (not value or any(c.isspace() for c in value)):
      raise UserError(f'{flag}={value!r} goes on an #SBATCH line and must be non-empty without '
                      'spaces; choose another value')
  for option in job.sbatch_options:
    if not option.startswith('-') or '\n' in option:
      raise UserError(f'--sbatch_option={option!r} must be one sbatch flag such as '
                      '--constraint=a100 (one line, starting with -)')
  for name, _ in job.env:
    if not name.isidentifier() or not name.isascii():
      raise UserError(f'--env {name}=...: {name!r} is not a variable name; write --env NAME=VALUE')


def mesh_overrides(mesh_cfg, user_keys: set[str], job: Job) -> list[str]:
  """The `--config.mesh.*` overrides this layout needs, given the config's mesh (after the
  user's overrides) and the keys the user set; checks the final mesh against the job's GPUs."""
  added = {}
  if 'mesh.platform' not in user_keys and mesh_cfg['platform'] == 'auto':
    added['platform'] = 'gpu'  # a CPU-only install stops in one line instead of training on CPU
  platform = added.get('platform', mesh_cfg['platform'])
  if platform == 'tpu':
    raise UserError('config.mesh.platform=tpu, but SLURM jobs here run on GPUs; pass '
                    '--config.mesh.platform=gpu (or use launch.py pod for TPU slices)')
  per_node = job.tasks_per_node == 1
  if 'mesh.dcn_data' not in user_keys:
    wanted = job.nodes if per_node else 1
    if int(mesh_cfg['dcn_data']) != wanted:
      added['dcn_data'] = wanted
  dcn = int(added.get('dcn_data', mesh_cfg['dcn_data']))
  if per_node and dcn not in (1, job.nodes):
    raise UserError(f'mesh.dcn_data={dcn} with one process per node: use the node count '
                    f'({job.nodes}, one slice per node) or 1')
  if not per_node and dcn != 1:
    raise UserError(f'mesh.dcn_data={dcn} with one process per GPU: keep --config.mesh.dcn_data=1 '
                    f'and set --config.mesh.data={job.nodes} (devices are ordered node by node)')
  mesh = {name: mesh_cfg[name] for name in ('data', 'fsdp', 'tensor')} | {'dcn_data': dcn}
  gpus = job.nodes * job.gpus_per_node
  try:
    resolve_mesh_shape(mesh, gpus)
  except UserError as e:
    why = ''
    if 'dcn_data' in added and dcn > 1:
      why = (f' (launch.py slurm set mesh.dcn_data={dcn}, one slice per node; '
             '--config.mesh.dcn_data=1 keeps one flat mesh)')
    raise UserError(f'{job.nodes} nodes x {job.gpus_per_node} GPUs: {e}{why}') from None
  return [f'--config.mesh.{key}={value}' for key, value in added.items()]


def train_args(config: str, run_dir: str | None, overrides: list[str]) -> tuple[str, ...]:
  """The arguments of `launch.py train`: the config, the run directory if given, overrides."""
  return ('--config', config, *(['--run_dir', run_dir] if run_dir else []), *overrides)


def srun_command(job: Job) -> list[str]:
  """The job step: every process runs the same `launch.py train` command."""
  return ['srun', f'--nodes={job.nodes}', f'--ntasks-per-node={job.tasks_per_node}',
          f'--gpus-per-node={job.gpus_per_node}', f'--cpus-per-task={job.cpus}',
          job.python, 'launch.py', 'train', *job.train_args]


def sbatch_lines(job: Job) -> list[str]:
  log = f'{job.log_dir.rstrip("/")}/{job.job_name}-%j'
  options = [f'--job-name={job.job_name}', f'--nodes={job.nodes}',
             f'--ntasks-per-node={job.tasks_per_node}', f'--gpus-per-node={job.gpus_per_node}',
             f'--cpus-per-task={job.cpus}']
  options += [f'--{flag}={value}' for flag, value in
              (('time', job.time), ('partition', job.partition), ('account', job.account)) if value]
  options += [f'--output={log}.out', f'--error={log}.err', '--open-mode=append',
              f'--signal=TERM@{job.signal_s}', '--requeue', *job.sbatch_options]
  return [f'#SBATCH {option}' for option in options]


def batch_script(job: Job) -> str:
  """The whole `sbatch` file."""
  check_layout(job)
  lines = ['#!/bin/bash',
           f'# {job.job_name}: written by `launch.py slurm` (sharding/slurm.py) for sbatch.',
           *sbatch_lines(job),
           '',
           '# Preemption and time limits: SLURM sends SIGTERM (--signal: that many seconds before',
           '# the time limit; on preemption: its grace time before SIGKILL); the run saves a',
           f'# checkpoint and exits {EXIT_PREEMPTED}. This script then requeues the job (same id;',
           '# --requeue allows it) and the next attempt resumes from that checkpoint.',
           'set -euo pipefail',
           f'cd {shlex.quote(job.workdir)}']
  if job.tasks_per_node == 1:
    devices = ','.join(str(i) for i in range(job.gpus_per_node))
    lines += ['# One process per node drives all its GPUs (under SLURM jax would take only the',
              '# GPU numbered SLURM_LOCALID).',
              f'export JAX_LOCAL_DEVICE_IDS={devices}']
  lines += [f'export {name}={shlex.quote(value)}' for name, value in job.env]
  lines += [
      '# jax.distributed reads coordinator (the first node), process count and id from SLURM_*.',
      'coordinator=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
      'echo "job $SLURM_JOB_ID attempt ${SLURM_RESTART_COUNT:-0}: ${SLURM_JOB_NUM_NODES:-?} nodes,'
      ' coordinator $coordinator"',
      "# The batch shell gets SIGTERM too: outlive it, so that the requeue below still runs.",
      "trap 'echo \"batch script: SIGTERM, waiting for the run to save\"' TERM",
      'status=0',
      shlex.join(srun_command(job)) + ' || status=$?',
      f'if [ "$status" -eq {EXIT_PREEMPTED} ]; then',
      f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {job.max_requeues} ]; then',
      '    echo "checkpoint saved (exit 75); requeueing job $SLURM_JOB_ID to resume"',
      '    scontrol requeue "$SLURM_JOB_ID" || echo "requeue failed; resubmit this script"',
      '  else',
      f'    echo "exit 75 after {job.max_requeues} requeues; resubmit this script to resume"',
      '  fi',
      'fi',
      'exit "$status"']
  return '\n'.join(lines) + '\n'
