"""The commands that drive a Cloud TPU VM slice: gcloud argv lists and the shell run on workers.

Everything here is a pure function from names to commands; `sharding/pod_cli.py` runs them
(`launch.py pod ...`) and `--dry_run` prints them. Every worker call is one
`gcloud compute tpus tpu-vm ssh NAME --worker=all --command=SCRIPT`: all workers run the same
script in the same directory. The run is marked with `LAUNCH_POD_WORKER=1`
(`sharding.distributed.POD_MARKER`), so that `config.distributed.coordinator='auto'` (the default)
lets `jax.distributed` find its peers there by itself (from the TPU metadata server).

A run on a worker is started detached (`setsid nohup`), so it survives the ssh connection:
its output is appended to `WORKDIR/.pod/run-HOSTNAME.log`, the training process's id to `...pid` and
its exit status to `...exit`. `pod stop` signals that process id (SIGTERM: the run saves a
checkpoint and exits 75), never a process name. `pod run` follows the log until the run ends
and exits with its status.
"""

import dataclasses
import shlex
from typing import Sequence

from errors import UserError
from sharding.distributed import POD_MARKER

STATE_DIR = '.pod'  # inside the workdir on every worker
HOST_FILES = STATE_DIR + '/run-$(hostname)'  # expanded by the worker's shell
STATUS_PREFIX = 'pod-status:'
SETUP_PREFIX = 'pod-setup:'


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU VM slice, and the queued resource that (re)creates it, if any."""
  tpu: str
  zone: str
  project: str | None = None
  queued_resource: str | None = None
  accelerator_type: str | None = None  # e.g. v4-32; needed to create a queued resource
  runtime_version: str | None = None  # e.g. tpu-ubuntu2204-base
  spot: bool = False

  def __post_init__(self):
    if not self.tpu or not self.zone:
      raise UserError('launch.py pod needs --tpu NAME and --zone ZONE')


def _where(pod: Slice) -> list[str]:
  return [f'--zone={pod.zone}'] + ([f'--project={pod.project}'] if pod.project else [])


def tpu_vm(pod: Slice, verb: str, *args: str) -> list[str]:
  """`gcloud compute tpus tpu-vm VERB NAME ARGS --zone=Z [--project=P]`."""
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, pod.tpu, *args, *_where(pod)]


def describe(pod: Slice) -> list[str]:
  return tpu_vm(pod, 'describe', '--format=json')


def ssh(pod: Slice, script: str, worker: str = 'all') -> list[str]:
  return tpu_vm(pod, 'ssh', f'--worker={worker}', f'--command={script}')


def scp(pod: Slice, local_path: str, remote_path: str, worker: str = 'all') -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local_path, f'{pod.tpu}:{remote_path}',
          f'--worker={worker}', *_where(pod)]


def _queued(pod: Slice, verb: str, *args: str) -> list[str]:
  if not pod.queued_resource:
    raise UserError('this needs --queued_resource NAME (the queued resource that holds the slice)')
  return ['gcloud', 'compute', 'tpus', 'queued-resources', verb, pod.queued_resource, *args,
          *_where(pod)]


def queued_create(pod: Slice) -> list[str]:
  """Asks for the slice as a queued resource (spot capacity with `spot`)."""
  if not pod.accelerator_type or not pod.runtime_version:
    raise UserError('creating a queued resource needs --accelerator_type (e.g. v4-32) and '
                    '--runtime_version (e.g. tpu-ubuntu2204-base)')
  return _queued(pod, 'create', f'--node-id={pod.tpu}', f'--accelerator-type={pod.accelerator_type}',
                 f'--runtime-version={pod.runtime_version}', *(['--spot'] if pod.spot else []))


def queued_describe(pod: Slice) -> list[str]:
  return _queued(pod, 'describe', '--format=json')


def queued_delete(pod: Slice) -> list[str]:
  """Deletes the queued resource and its slice (`--force`), without asking (`--quiet`)."""
  return _queued(pod, 'delete', '--force', '--quiet')


def launch_command(verb_args: Sequence[str], python: str = 'python3',
                   env: Sequence[str] = ()) -> str:
  """`LAUNCH_POD_WORKER=1 NAME=VALUE ... python launch.py VERB ...`, quoted for a POSIX shell."""
  if not verb_args:
    raise UserError('launch.py pod needs a command after --, e.g. -- train --config configs/x.py')
  for item in env:
    if '=' not in item or not item.split('=', 1)[0].isidentifier():
      raise UserError(f'--env {item!r} is not NAME=VALUE')
  assignments = [f'{POD_MARKER}=1'] + [f"{name}={shlex.quote(value)}" for name, value in
                                      (item.split('=', 1) for item in env)]
  return ' '.join(assignments + [shlex.join([python, 'launch.py', *verb_args])])


def start_script(workdir: str, launch: str, attach: bool = True) -> str:
  """Starts `launch` detached on a worker; with `attach`, follows its log and exits with its status.

  Refuses (exit 2) while the previous run on that worker is still going.
  """
  files = HOST_FILES
  wrapper = f'{launch} & echo $! > {files}.pid; wait $!; echo $? > {files}.exit'
  lines = [
      f'cd {shlex.quote(workdir)} && mkdir -p {STATE_DIR} || exit 2',
      f'if [ -f {files}.pid ] && kill -0 "$(cat {files}.pid)" 2>/dev/null; then '
      f'echo "pod: a run is still going on $(hostname) (pid $(cat {files}.pid)); '
      'launch.py pod stop ends it" >&2; exit 2; fi',
      f'rm -f {files}.pid {files}.exit',
      f'offset=$(cat {files}.log 2>/dev/null | wc -c)',  # the log keeps earlier runs' output
      f'setsid nohup sh -c {shlex.quote(wrapper)} >> {files}.log 2>&1 < /dev/null &',
      'wrapper=$!',
      f'while [ ! -s {files}.pid ] && kill -0 $wrapper 2>/dev/null; do sleep 0.2; done',
  ]
  if attach:
    lines += [f'tail -c +$((offset + 1)) -f --pid=$wrapper {files}.log',
              f'exit "$(cat {files}.exit 2>/dev/null || echo 255)"']
  else:
    lines.append(f'echo "pod: started on $(hostname), pid $(cat {files}.pid), '
                 f'log {workdir}/{files}.log"')
  return '\n'.join(lines)


def status_script(workdir: str) -> str:
  """Prints `pod-status: HOSTNAME STATE` on each worker: an exit status, `running` or `none`."""
  files = HOST_FILES
  return (f'cd {shlex.quote(workdir)} 2>/dev/null; '
          f'if [ -f {files}.exit ]; then state=$(cat {files}.exit); '
          f'elif [ -f {files}.pid ] && kill -0 "$(cat {files}.pid)" 2>/dev/null; then state=running; '
          'else state=none; fi; '
          f'echo "{STATUS_PREFIX} $(hostname) $state"')


def parse_status(output: str) -> dict[str, str]:
  """{worker hostname: state} from the output of `status_script` on every worker."""
  states = {}
  for line in output.splitlines():
    if line.startswith(STATUS_PREFIX):
      host, _, state = line[len(STATUS_PREFIX):].strip().partition(' ')
      states[host] = state.strip()
  return states


def stop_script(workdir: str, signal: str = 'TERM') -> str:
  """Sends `signal` to the process id recorded when the run started on each worker."""
  files = HOST_FILES
  return (f'cd {shlex.quote(workdir)} && if [ -f {files}.pid ] && '
          f'kill -0 "$(cat {files}.pid)" 2>/dev/null; then kill -{signal} "$(cat {files}.pid)" && '
          f'echo "pod: sent SIG{signal} to pid $(cat {files}.pid) on $(hostname)"; '
          'else echo "pod: no run going on $(hostname)"; fi')


def logs_script(workdir: str, lines: int = 50, follow: bool = False) -> str:
  """The last `lines` lines of each worker's run log (`follow`: keep printing)."""
  files = HOST_FILES
  tail = f'tail -n {int(lines)}' + (' -f' if follow else '')
  return (f'cd {shlex.quote(workdir)} && echo "== $(hostname): {workdir}/{files}.log" && '
          f'{tail} {files}.log')


def setup_script(archive: str, workdir: str, install: str) -> str:
  """Unpacks the uploaded code into `workdir`, installs, prints `pod-setup: HOST ok|failed`."""
  quoted = shlex.quote(workdir)
  return '\n'.join([
      f'mkdir -p {quoted} && tar -xzf {shlex.quote(archive)} -C {quoted} && '
      f'rm -f {shlex.quote(archive)} && cd {quoted} && mkdir -p {STATE_DIR} && '
      f'({install}) > {STATE_DIR}/setup.log 2>&1',
      'code=$?',
      f'if [ $code = 0 ]; then echo "{SETUP_PREFIX} $(hostname) ok"; else '
      f'tail -n 5 {quoted}/{STATE_DIR}/setup.log 2>/dev/null; '
      f'echo "{SETUP_PREFIX} $(hostname) failed (exit $code; {workdir}/{STATE_DIR}/setup.log)"; fi',
      'exit $code'])


def parse_setup(output: str) -> dict[str, str]:
  """{worker hostname: 'ok' or 'failed (...)'} from the output of `setup_script`."""
  results = {}
  for line in output.splitlines():
    if line.startswith(SETUP_PREFIX):
      host, _, result = line[len(SETUP_PREFIX):].strip().partition(' ')
      results[host] = result
  return results
