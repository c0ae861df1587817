"""`launch.py slurm`: write the SLURM batch script of a training run on GPU nodes and submit it.

    launch.py slurm --config configs/llama_1b.py --nodes 4 --partition gpu --time 24:00:00 \\
        --run_dir /shared/runs/llama_1b --dry_run     # print the script and the sbatch command
    launch.py slurm --config configs/llama_1b.py --nodes 4 ...   # write it, then `sbatch` it

The config and its --config.* overrides are parsed as by `launch.py train` (launch.py) and
passed on to it; the script itself is built in `sharding/slurm.py`.
"""

import argparse
import dataclasses
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from errors import UserError
from sharding import slurm
from storage import is_remote

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--nodes', type=int, required=True, help='GPU nodes to run on')
  parser.add_argument('--gpus_per_node', type=int, default=8, help='GPUs of each node (default 8)')
  parser.add_argument('--tasks_per_node', type=int, default=1,
                      help='1 (default): one process per node driving all its GPUs, with '
                           'mesh.dcn_data = nodes; or --gpus_per_node: one process per GPU')
  parser.add_argument('--cpus_per_task', type=int, default=0,
                      help=f'CPU cores per process (default {slurm.CPUS_PER_GPU} per GPU it '
                           'drives)')
  parser.add_argument('--partition', default=None,
                      help="the SLURM partition (default: the cluster's)")
  parser.add_argument('--account', default=None, help="account to charge (default: the cluster's)")
  parser.add_argument('--time', default=None, help="time limit, e.g. 24:00:00 (default: the "
                      "partition's)")
  parser.add_argument('--job_name', default=None, help='job name (default: the config name)')
  parser.add_argument('--workdir', default=str(ROOT),
                      help='the checkout on the nodes, where the job runs (default: this one, '
                           f'{ROOT}; it must be on a file system the nodes share)')
  parser.add_argument('--python', default='.venv/bin/python',
                      help='interpreter, relative to --workdir or absolute (default: '
                           '.venv/bin/python, what make install ACCEL=cuda12 makes)')
  parser.add_argument('--run_dir', default=None,
                      help='run directory on shared storage or gs://bucket/path, where '
                           'checkpoints are resumed from (default: <run_root>/<name> in --workdir)')
  parser.add_argument('--script', default=None,
                      help='where to write the batch script (default: <run_dir>/slurm/job.sbatch, '
                           'or <workdir>/slurm/<job_name>/job.sbatch for a gs:// run_dir)')
  parser.add_argument('--log_dir', default=None,
                      help="the job's stdout/stderr files, <job_name>-<job id>.out/.err (default: "
                           "the script's folder; a shared file system)")
  parser.add_argument('--sbatch_option', action='append', default=[],
                      help='an extra #SBATCH line, e.g. --sbatch_option=--constraint=a100 '
                           '(repeatable)')
  parser.add_argument('--env', action='append', default=[],
                      help='NAME=VALUE exported before srun (repeatable)')
  parser.add_argument('--signal_s', type=int, default=120,
                      help='SIGTERM the run this many seconds before the time limit, so that it '
                           'saves and the script requeues it (default 120)')
  parser.add_argument('--max_requeues', type=int, default=20,
                      help='requeue a run that exited 75 (preempted, saved) this many times at '
                           'most (default 20)')
  parser.add_argument('--dry_run', action='store_true',
                      help='print the script and the sbatch command; write and submit nothing')


def _env_pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
  pairs = []
  for item in items:
    if '=' not in item:
      raise UserError(f'--env {item!r} has no value; write --env NAME=VALUE')
    name, value = item.split('=', 1)
    pairs.append((name, value))
  return tuple(pairs)


def script_path(args, config, job_name: str) -> Path:
  """Where the batch script goes: --script, else next to the run's checkpoints."""
  if args.script:
    return Path(args.script).absolute()
  run_dir = args.run_dir or f'{config.run_root}/{config.name}'
  if is_remote(run_dir):
    return Path(args.workdir) / 'slurm' / job_name / 'job.sbatch'
  return Path(args.workdir) / run_dir / 'slurm' / 'job.sbatch'


def make_job(args, config, overrides: list[str]) -> tuple[slurm.Job, Path]:
  """The job the flags describe (mesh overrides chosen and checked) and its script's path."""
  job_name = args.job_name or config.name
  script = script_path(args, config, job_name)
  job = slurm.Job(
      nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
      cpus_per_task=args.cpus_per_task, job_name=job_name, workdir=args.workdir,
      python=args.python, log_dir=args.log_dir or str(script.parent), time=args.time,
      partition=args.partition, account=args.account, sbatch_options=tuple(args.sbatch_option),
      env=_env_pairs(args.env), signal_s=args.signal_s, max_requeues=args.max_requeues)
  slurm.check_layout(job)
  user_keys = {slurm.override_key(override) for override in overrides}
  added = slurm.mesh_overrides(config.mesh, user_keys, job)
  train_args = slurm.train_args(args.config, args.run_dir, [*overrides, *added])
  return dataclasses.replace(job, train_args=train_args), script


def submit(args, config, overrides: list[str], out=None) -> int:
  """`launch.py slurm`: prints (--dry_run) or writes and submits the batch script."""
  out = out or sys.stdout
  job, script = make_job(args, config, overrides)
  text = slurm.batch_script(job)
  command = ['sbatch', '--parsable', str(script)]
  if args.dry_run:
    print(text, file=out)
    print(f'# would write {script} and run: {shlex.join(command)}', file=out, flush=True)
    return 0
  if shutil.which('sbatch') is None:
    raise UserError('sbatch is not installed here; run launch.py slurm on the SLURM login node, '
                    'or use --dry_run and submit the printed script with sbatch there')
  script.parent.mkdir(parents=True, exist_ok=True)
  Path(job.log_dir).mkdir(parents=True, exist_ok=True)  # SLURM does not create it
  script.write_text(text)
  print(f'wrote {script}', file=out, flush=True)
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    reason = ' '.join((done.stderr or done.stdout).split())[:300]
    raise UserError(f'sbatch refused the job ({reason}); fix the flags it names (--partition, '
                    f'--account, --time, --sbatch_option) and run again')
  job_id = done.stdout.strip().split(';')[0]
  log = f'{job.log_dir.rstrip("/")}/{job.job_name}-{job_id}'
  print(f'submitted job {job_id}; watch it with: squeue -j {job_id} and tail -f {log}.out '
        f'{log}.err', file=out, flush=True)
  return 0
