"""`launch.py pod`: runs one launch.py command on every worker of a Cloud TPU VM pod slice.

    python launch.py pod --tpu my-v4-32 --zone us-central2-b [--project P] [--dry_run] \\
        -- train --config configs/gpt2_small.py --config.mesh.fsdp=-1

becomes one `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`: every worker runs
the same command in the same directory, marked with `LAUNCH_POD_WORKER=1` so that
`config.distributed.coordinator='auto'` (the default) lets `jax.distributed` find its peers there
by itself (from the TPU metadata server, sharding/distributed.py). The code and the prepared
corpus must already be on every worker (same relative directory; a shared disk or `gcloud ... scp`).
`--dry_run` prints the exact command, quoted for a POSIX shell, and runs nothing.
"""

import shlex
import shutil
import subprocess
from typing import Sequence

from errors import UserError
from sharding.distributed import POD_MARKER


def remote_command(verb_args: Sequence[str], workdir: str, python: str = 'python3',
                   env: Sequence[str] = ()) -> str:
  """The shell line each worker runs: cd into the code, then launch.py with the given args."""
  if not verb_args:
    raise UserError('launch.py pod needs a command after --, e.g. -- train --config configs/x.py')
  for item in env:
    if '=' not in item or not item.split('=', 1)[0].isidentifier():
      raise UserError(f'--env {item!r} is not NAME=VALUE')
  assignments = [f'{POD_MARKER}=1'] + [f"{name}={shlex.quote(value)}" for name, value in
                                      (item.split('=', 1) for item in env)]
  launch = shlex.join([python, 'launch.py', *verb_args])
  return f'cd {shlex.quote(workdir)} && ' + ' '.join(assignments + [launch])


def gcloud_command(tpu: str, zone: str, remote: str, project: str | None = None,
                   worker: str = 'all') -> list[str]:
  """The argv of the gcloud call that runs `remote` on the pod's workers."""
  if not tpu or not zone:
    raise UserError('launch.py pod needs --tpu NAME and --zone ZONE')
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', tpu, f'--zone={zone}']
  if project:
    command.append(f'--project={project}')
  return command + [f'--worker={worker}', f'--command={remote}']


def run(command: list[str], dry_run: bool) -> int:
  """Prints (dry run) or runs `command`; returns its exit status."""
  if dry_run:
    print(shlex.join(command))
    return 0
  if shutil.which(command[0]) is None:
    raise UserError(f'{command[0]} is not installed here; install the Google Cloud SDK or use '
                    '--dry_run and run the printed command where it is')
  return subprocess.run(command, check=False).returncode
