"""`launch.py pod ACTION`: set up, run, watch and stop a training run on every worker of a TPU VM slice.

    launch.py pod create --tpu NAME --zone Z --queued_resource QR --accelerator_type v4-32 \\
        --runtime_version tpu-ubuntu2204-base --spot        # ask for (spot) capacity
    launch.py pod setup  --tpu NAME --zone Z [--rev REV]    # copy the code, make install ACCEL=tpu
    launch.py pod run    --tpu NAME --zone Z [--keep_alive] -- train --config configs/x.py ...
    launch.py pod logs   --tpu NAME --zone Z [--worker 0] [--follow]
    launch.py pod stop   --tpu NAME --zone Z                # SIGTERM by recorded pid: save, exit 75
    launch.py pod status | delete ...

Every action goes through `gcloud compute tpus tpu-vm` (or `queued-resources`); `--dry_run`
prints the exact commands and runs nothing. `launch.py pod --tpu ... -- train ...` (no action)
is `pod run`. The commands themselves are built in `sharding/pod.py`; the keep-alive loop is in
`sharding/pod_keep_alive.py`.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from errors import UserError
from sharding import pod

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ('create', 'setup', 'run', 'logs', 'stop', 'status', 'delete')
REMOTE_ARCHIVE = 'launch-pod-code.tar.gz'  # in the home directory of every worker
# jax 0.10 needs Python >= 3.11; the Ubuntu 22.04 TPU VM images ship 3.10 and offer 3.11 by apt.
DEFAULT_INSTALL = ('command -v python3.11 > /dev/null || (sudo apt-get update -q && '
                   'sudo apt-get install -y -q python3.11-venv) && '
                   'make install ACCEL=tpu PYTHON=python3.11')


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(f'{self.prog}: {message}; see {self.prog} --help')


class Gcloud:
  """Runs gcloud commands, or only prints them (`dry_run`). The one place with side effects."""

  def __init__(self, dry_run: bool, out=None):
    self.dry_run = dry_run
    self.out = out or sys.stdout
    self.last_error = ''
    if not dry_run and shutil.which('gcloud') is None:
      raise UserError('gcloud is not installed here; install the Google Cloud SDK '
                      '(https://cloud.google.com/sdk/docs/install) or use --dry_run and run the '
                      'printed commands where it is')

  def show(self, command: list[str]) -> None:
    print(shlex.join(command), file=self.out, flush=True)

  def call(self, command: list[str]) -> int:
    """Runs `command` with its output on the console; returns its exit status."""
    if self.dry_run:
      self.show(command)
      return 0
    return subprocess.run(command, check=False).returncode

  def capture(self, command: list[str], echo: bool = False) -> tuple[int, str]:
    """(exit status, stdout) of `command`; `echo` also passes its output through."""
    if self.dry_run:
      self.show(command)
      return 0, ''
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
      for line in process.stdout:
        lines.append(line)
        if echo:
          print(line, end='', file=self.out, flush=True)
    return process.returncode, ''.join(lines)

  def query(self, command: list[str]) -> dict | None:
    """The JSON that a `describe` prints, None when it fails (what it said is kept in
    `last_error`); in a dry run, prints the command and answers {}."""
    if self.dry_run:
      self.show(command)
      return {}
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
      self.last_error = (done.stderr.strip().splitlines() or [f'exit {done.returncode}'])[-1]
      return None
    return json.loads(done.stdout or '{}')

  def tpu_state(self, slice_: pod.Slice) -> dict | None:
    """The slice's `describe` record ({'state': 'READY', ...}), None when it does not exist."""
    record = self.query(pod.describe(slice_))
    return {'state': 'READY'} if self.dry_run else record

  def queued_state(self, slice_: pod.Slice) -> str | None:
    """The queued resource's state (ACCEPTED, ACTIVE, SUSPENDED, FAILED ...), None if absent."""
    record = self.query(pod.queued_describe(slice_))
    return 'ACTIVE' if self.dry_run else record and record.get('state', {}).get('state')


def require_slice(gcloud: Gcloud, slice_: pod.Slice) -> dict:
  """The slice's describe record; a UserError in one line when it does not exist."""
  record = gcloud.tpu_state(slice_)
  if record is None:
    raise UserError(f'TPU {slice_.tpu!r} was not found in zone {slice_.zone}'
                    f'{" of project " + slice_.project if slice_.project else ""} '
                    f'(gcloud compute tpus tpu-vm describe: {gcloud.last_error}); check --tpu, '
                    '--zone and --project, or create it (launch.py pod create)')
  return record


def worker_count(record: dict) -> int:
  return len(record.get('networkEndpoints', [])) or 1


def make_archive(rev: str | None, dry_run: bool, out) -> str:
  """A .tar.gz of the checkout (tracked and untracked, not ignored files) or of git `rev`."""
  path = os.path.join(tempfile.gettempdir(), f'launch-pod-{os.getpid()}.tar.gz')
  if rev:
    command = ['git', '-C', str(ROOT), 'archive', '--format=tar.gz', '-o', path, rev]
    if dry_run:
      print(shlex.join(command), file=out)
    elif subprocess.run(command, check=False).returncode != 0:
      raise UserError(f'git archive of revision {rev!r} failed; name a commit, branch or tag')
    return path
  listing = subprocess.run(['git', '-C', str(ROOT), 'ls-files', '-z', '--cached', '--others',
                            '--exclude-standard'], capture_output=True, text=True, check=False)
  if listing.returncode != 0:
    raise UserError(f'{ROOT} is not a git checkout; pass --rev or copy the code yourself')
  files = [name for name in listing.stdout.split('\0') if name and (ROOT / name).is_file()]
  if dry_run:
    print(f'# tar -czf {path} -C {ROOT} <the {len(files)} files of '
          '`git ls-files --cached --others --exclude-standard`>', file=out)
    return path
  with tarfile.open(path, 'w:gz') as archive:
    for name in files:
      archive.add(ROOT / name, arcname=name)
  return path


def setup(gcloud: Gcloud, slice_: pod.Slice, args) -> int:
  """Copies the code to every worker and installs there, in parallel; reports each worker."""
  workers = worker_count(require_slice(gcloud, slice_))
  archive = make_archive(args.rev, gcloud.dry_run, gcloud.out)
  try:
    if gcloud.call(pod.scp(slice_, archive, REMOTE_ARCHIVE)) != 0:
      raise UserError(f'copying the code to {slice_.tpu} failed (gcloud ... scp); see above')
    code, output = gcloud.capture(pod.ssh(slice_, pod.setup_script(
        REMOTE_ARCHIVE, args.workdir, args.install)), echo=True)
  finally:
    if not gcloud.dry_run and os.path.exists(archive):
      os.remove(archive)
  if gcloud.dry_run:
    return 0
  results = pod.parse_setup(output)
  ok = sorted(host for host, result in results.items() if result == 'ok')
  print(f'setup: {len(ok)} of {workers} workers ready'
        + (f'; not ready: {", ".join(sorted(set(results) - set(ok)))}' if len(ok) < workers else ''),
        file=gcloud.out, flush=True)
  return 0 if len(ok) == workers and code == 0 else 1


def worker_states(gcloud: Gcloud, slice_: pod.Slice, workdir: str) -> dict[str, str]:
  """{worker: exit status | 'running' | 'none'} read from every worker."""
  _, output = gcloud.capture(pod.ssh(slice_, pod.status_script(workdir)))
  return pod.parse_status(output)


def run(gcloud: Gcloud, slice_: pod.Slice, args, verb_args: list[str]) -> int:
  launch = pod.launch_command(verb_args, args.python, args.env)
  if args.keep_alive:
    from sharding.pod_keep_alive import keep_alive
    return keep_alive(gcloud, slice_, args, launch)
  require_slice(gcloud, slice_)
  return gcloud.call(pod.ssh(slice_, pod.start_script(args.workdir, launch,
                                                      attach=not args.detach), args.worker))


def _slice_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--tpu', required=True, help='the TPU VM (slice) name')
  parser.add_argument('--zone', required=True, help='its zone, e.g. us-central2-b')
  parser.add_argument('--project', default=None, help="the Google Cloud project (default: gcloud's)")
  parser.add_argument('--queued_resource', default=None,
                      help='the queued resource holding the slice (create, delete, keep_alive)')
  parser.add_argument('--accelerator_type', default=None, help='e.g. v4-32 (create)')
  parser.add_argument('--runtime_version', default='tpu-ubuntu2204-base',
                      help='TPU VM image (create; default tpu-ubuntu2204-base)')
  parser.add_argument('--spot', action='store_true', help='spot capacity (create)')
  parser.add_argument('--workdir', default=ROOT.name,
                      help="the code's directory on the workers, relative to the home directory "
                           f"or absolute (default: {ROOT.name})")
  parser.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog='launch.py pod', description=__doc__.split('\n\n')[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter,
                   epilog='`launch.py pod ACTION --help` explains each action.')
  actions = parser.add_subparsers(dest='action', required=True, parser_class=_Parser)
  helps = {'create': 'ask for the slice as a queued resource (--spot for spot capacity)',
           'setup': 'copy the code (or --rev) to every worker and install the TPU environment',
           'run': 'run `launch.py VERB ...` (after --) on every worker; follows the log',
           'logs': "print each worker's run log (--worker 0: process 0's)",
           'stop': 'end the run on every worker by its recorded process id (SIGTERM: it saves)',
           'status': 'the state of the slice (and queued resource) and of the run on each worker',
           'delete': 'delete the queued resource and its slice'}
  sub = {name: actions.add_parser(name, help=text, description=text) for name, text in helps.items()}
  for action in sub.values():
    _slice_flags(action)
  sub['setup'].add_argument('--rev', default=None,
                            help='copy this git revision (git archive) instead of the checkout')
  sub['setup'].add_argument('--install', default=DEFAULT_INSTALL,
                            help="what runs in the code's directory after copying (default: "
                                 'Python 3.11 from apt if missing, then make install ACCEL=tpu)')
  sub['run'].add_argument('--worker', default='all', help="workers to run on (default 'all')")
  sub['run'].add_argument('--python', default='.venv/bin/python',
                          help='interpreter on the workers (default: .venv/bin/python, what '
                               'pod setup installs)')
  sub['run'].add_argument('--env', action='append', default=[], help='NAME=VALUE for the command')
  sub['run'].add_argument('--detach', action='store_true',
                          help='start and return; follow with pod logs (default: follow the log)')
  sub['run'].add_argument('--keep_alive', action='store_true',
                          help='on preemption or a dead worker: wait for (or re-create) the slice, '
                               'set it up again and rerun; the run resumes from its checkpoint')
  sub['run'].add_argument('--max_restarts', type=int, default=20,
                          help='give up after this many restarts (keep_alive; default 20)')
  sub['run'].add_argument('--poll_s', type=float, default=60.0,
                          help='seconds between slice state checks (keep_alive; default 60)')
  sub['run'].add_argument('--ready_timeout_s', type=float, default=6 * 3600,
                          help='give up when the slice is not READY within this (keep_alive)')
  sub['run'].add_argument('--install', default=DEFAULT_INSTALL,
                          help='install command for re-setup after re-creation (keep_alive)')
  sub['run'].add_argument('--rev', default=None, help='git revision for re-setup (keep_alive)')
  sub['logs'].add_argument('--worker', default='all', help="'all' (default) or a worker, e.g. 0")
  sub['logs'].add_argument('--lines', type=int, default=50, help='lines per worker (default 50)')
  sub['logs'].add_argument('--follow', action='store_true', help='keep printing (Ctrl-C to stop)')
  sub['stop'].add_argument('--signal', default='TERM', choices=('TERM', 'INT', 'KILL'),
                           help='TERM (default): save a checkpoint and exit 75; KILL: at once')
  return parser


def main(argv: list[str], out=None) -> int:
  """`launch.py pod ...`; returns the exit status."""
  cut = argv.index('--') if '--' in argv else len(argv)
  head, verb_args = argv[:cut], argv[cut + 1:]
  if head and head[0].startswith('--') and head[0] not in ('--help', '-h'):
    head = ['run', *head]  # `launch.py pod --tpu ... -- train ...` as before
  args = build_parser().parse_args(head)
  slice_ = pod.Slice(args.tpu, args.zone, args.project, args.queued_resource,
                     args.accelerator_type, args.runtime_version, args.spot)
  if args.action == 'run' and not verb_args:
    raise UserError('launch.py pod run: put the command after --, e.g. -- train --config '
                    'configs/x.py')
  if args.action != 'run' and verb_args:
    raise UserError(f'launch.py pod {args.action} takes no command after --')
  gcloud = Gcloud(args.dry_run, out)
  if args.action == 'create':
    return gcloud.call(pod.queued_create(slice_))
  if args.action == 'delete':
    return gcloud.call(pod.queued_delete(slice_))
  if args.action == 'setup':
    return setup(gcloud, slice_, args)
  if args.action == 'run':
    return run(gcloud, slice_, args, verb_args)
  if args.action == 'status':
    return status(gcloud, slice_, args.workdir)
  require_slice(gcloud, slice_)
  if args.action == 'logs':
    return gcloud.call(pod.ssh(slice_, pod.logs_script(args.workdir, args.lines, args.follow),
                               args.worker))
  return gcloud.call(pod.ssh(slice_, pod.stop_script(args.workdir, args.signal)))


def status(gcloud: Gcloud, slice_: pod.Slice, workdir: str) -> int:
  """The queued resource's state (if named), the slice's, and each worker's run."""
  if slice_.queued_resource:
    queued = gcloud.queued_state(slice_)
    print(f'queued resource {slice_.queued_resource}: {queued or "not found"}', file=gcloud.out)
    if gcloud.tpu_state(slice_) is None:
      print(f'slice {slice_.tpu}: not created yet', file=gcloud.out)
      return 0 if queued else 1
  record = require_slice(gcloud, slice_)
  line = f'slice {slice_.tpu}: {record.get("state", "?")}, {worker_count(record)} workers'
  states = worker_states(gcloud, slice_, workdir)
  print(line, file=gcloud.out)
  for host, state in sorted(states.items()):
    print(f'  {host}: {"exited " + state if state.isdigit() else state}', file=gcloud.out)
  return 0
