"""`launch.py pod`: the gcloud commands it prints, and what it does against a fake gcloud.

The fake (`tests/fake_gcloud.py`, first on PATH) is the external CLI's contract: it records
every call, reports scripted slice states (READY, PREEMPTED, ...) and runs `ssh` scripts with
bash in a directory that stands for a worker's home (one simulated worker). The runs on the
"worker" use a stand-in interpreter (`--python`) that exits with scripted statuses, except in
the end-to-end test, which trains a tiny model, preempts it with SIGTERM after its first
checkpoint and lets keep_alive resume it. Real gcloud and TPU VMs cannot be reached from here.
"""

import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

import launch
from sharding import pod
from tests.tiny_run import ROOT, tiny_flags, write_corpus

SLICE = ['--tpu', 'my-v4-32', '--zone', 'us-central2-b', '--project', 'lab']


class FakeCloud:
  def __init__(self, directory: Path):
    self.dir = directory
    self.home = directory / 'home'

  def scenario(self, **entries) -> None:
    (self.dir / 'scenario.json').write_text(json.dumps(entries))

  def calls(self) -> list[list[str]]:
    path = self.dir / 'calls.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

  def kinds(self) -> list[str]:
    """Each call as a short word: describe, qr-describe, scp, run, status, setup, stop, ..."""
    words = []
    for argv in self.calls():
      if argv[2] == 'queued-resources':
        words.append('qr-' + argv[3])
      elif argv[3] != 'ssh':
        words.append(argv[3])
      else:
        script = argv[6]
        words.append('run' if 'setsid nohup' in script else 'status' if pod.STATUS_PREFIX in script
                     else 'setup' if pod.SETUP_PREFIX in script else 'stop' if 'kill -' in script
                     else 'logs')
    return words


@pytest.fixture
def cloud(tmp_path, monkeypatch):
  directory = tmp_path / 'cloud'
  (directory / 'bin').mkdir(parents=True)
  shim = directory / 'bin' / 'gcloud'
  shim.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "fake_gcloud.py"} "$@"\n')
  shim.chmod(0o755)
  monkeypatch.setenv('PATH', f'{directory / "bin"}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_GCLOUD_DIR', str(directory))
  fake = FakeCloud(directory)
  fake.scenario()
  return fake


@pytest.fixture
def worker_python(tmp_path):
  """A stand-in interpreter for the worker: prints its arguments, then exits with the next
  status of `exits` (a file of one status per line), or sleeps with `sleep` as the status."""
  exits = tmp_path / 'exits'
  script = tmp_path / 'worker_python'
  script.write_text(textwrap.dedent(f'''\
      #!/bin/sh
      echo "worker ran: $*"
      code=$(head -n 1 {exits}); sed -i 1d {exits}
      if [ "$code" = sleep ]; then exec sleep 60; fi
      exit "$code"
      '''))
  script.chmod(0o755)
  return script, exits


def _pod(capfd, *argv) -> tuple[int, str, str]:
  capfd.readouterr()
  code = launch.main(['pod', *argv])
  captured = capfd.readouterr()
  return code, captured.out, captured.err


def _commands(printed: str) -> list[list[str]]:
  """The argv lists of the printed commands (a --command script may span several lines)."""
  commands = []
  for word in shlex.split(printed, comments=True):
    if word in ('gcloud', 'git'):
      commands.append([])
    commands[-1].append(word)
  return commands


def test_dry_run_prints_every_command(capfd):
  code, out, _ = _pod(capfd, 'run', *SLICE, '--dry_run', '--env', 'WANDB_MODE=off', '--workdir',
                      'main', '--', 'train', '--config', 'configs/gpt2_small.py',
                      "--config.name=it's mine")
  assert code == 0
  describe, start = _commands(out)
  assert describe == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'my-v4-32',
                      '--format=json', '--zone=us-central2-b', '--project=lab']
  assert start[:7] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-v4-32', '--worker=all']
  assert start[8:] == ['--zone=us-central2-b', '--project=lab']
  script = start[7].removeprefix('--command=')
  assert script.startswith('cd main && mkdir -p .pod')
  # The worker's shell sees the same words we were given, in the detached wrapper.
  wrapper = shlex.split(script.split('setsid nohup sh -c ', 1)[1])[0]
  assert shlex.split(wrapper.split(' & ', 1)[0]) == [
      'LAUNCH_POD_WORKER=1', 'WANDB_MODE=off', '.venv/bin/python', 'launch.py', 'train', '--config',
      'configs/gpt2_small.py', "--config.name=it's mine"]
  # Without an action, `pod` is `pod run`, as before.
  assert _pod(capfd, *SLICE, '--dry_run', '--', 'info')[0] == 0

  code, out, _ = _pod(capfd, 'create', *SLICE, '--queued_resource', 'qr1', '--accelerator_type',
                      'v4-32', '--spot', '--dry_run')
  assert _commands(out) == [['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'qr1',
                              '--node-id=my-v4-32', '--accelerator-type=v4-32',
                              '--runtime-version=tpu-ubuntu2204-base', '--spot',
                              '--zone=us-central2-b', '--project=lab']]
  code, out, _ = _pod(capfd, 'delete', *SLICE, '--queued_resource', 'qr1', '--dry_run')
  assert shlex.split(out)[3:7] == ['queued-resources', 'delete', 'qr1', '--force']
  code, out, _ = _pod(capfd, 'setup', *SLICE, '--rev', 'HEAD~1', '--dry_run')
  describe, archive, copy, install = _commands(out)
  assert archive[:3] == ['git', '-C', str(ROOT)] and archive[-1] == 'HEAD~1'
  assert copy[4:8] == ['scp', archive[-2], 'my-v4-32:launch-pod-code.tar.gz', '--worker=all']
  assert install[6] == '--worker=all' and 'make install ACCEL=tpu PYTHON=python3.11' in install[7]
  code, out, _ = _pod(capfd, 'stop', *SLICE, '--dry_run')
  assert 'kill -TERM "$(cat .pod/run-$(hostname).pid)"' in out
  code, out, _ = _pod(capfd, 'logs', *SLICE, '--worker', '0', '--dry_run')
  assert '--worker=0' in out and 'tail -n 50 .pod/run-$(hostname).log' in out


def test_one_line_errors(capfd, cloud, tmp_path, monkeypatch):
  assert _pod(capfd, 'run', *SLICE, '--dry_run')[2].startswith('error: launch.py pod run: put')
  assert 'takes no command' in _pod(capfd, 'stop', *SLICE, '--', 'train')[2]
  assert _pod(capfd, 'run', '--zone', 'z', '--', 'train')[0] == 2  # --tpu is required
  code, _, err = _pod(capfd, 'run', *SLICE, '--env', '1X=2', '--', 'train')
  assert code == 2 and 'is not NAME=VALUE' in err
  cloud.scenario(tpu_states=['MISSING'])
  code, _, err = _pod(capfd, 'logs', *SLICE)
  assert code == 2 and err.strip().splitlines() == [
      "error: TPU 'my-v4-32' was not found in zone us-central2-b of project lab (gcloud compute "
      'tpus tpu-vm describe: ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: my-v4-32); '
      'check --tpu, --zone and --project, or create it (launch.py pod create)']
  monkeypatch.setenv('PATH', str(tmp_path / 'nowhere'))
  code, _, err = _pod(capfd, 'stop', *SLICE)
  assert code == 2 and err.startswith('error: gcloud is not installed here') and \
      len(err.strip().splitlines()) == 1


def test_setup_copies_the_checkout_and_reports_each_worker(capfd, cloud):
  cloud.scenario(workers=1)
  code, out, _ = _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install',
                      'echo installing > installed.txt')
  assert code == 0 and out.strip().endswith('setup: 1 of 1 workers ready')
  assert (cloud.home / 'code' / 'launch.py').read_bytes() == (ROOT / 'launch.py').read_bytes()
  assert (cloud.home / 'code' / 'installed.txt').read_text() == 'installing\n'
  assert not (cloud.home / 'launch-pod-code.tar.gz').exists()
  assert cloud.kinds() == ['describe', 'scp', 'setup']
  # A failing install, and a worker that never answers, are named.
  cloud.scenario(workers=2)
  code, out, _ = _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install', 'exit 3')
  assert code == 1
  assert 'failed (exit 3; code/.pod/setup.log)' in out
  assert 'setup: 0 of 2 workers ready; not ready: ' in out


def test_run_logs_status_and_stop_by_recorded_pid(capfd, cloud, worker_python):
  python, exits = worker_python
  exits.write_text('sleep\n')
  _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install', 'true')
  code, out, _ = _pod(capfd, 'run', *SLICE, '--workdir', 'code', '--python', str(python),
                      '--detach', '--', 'train', '--config', 'configs/tiny.py')
  assert code == 0 and 'pod: started on ' in out
  pid_file = next((cloud.home / 'code' / '.pod').glob('run-*.pid'))
  pid = int(pid_file.read_text())
  os.kill(pid, 0)  # alive
  code, out, _ = _pod(capfd, 'status', *SLICE, '--workdir', 'code')
  assert out.startswith('slice my-v4-32: READY, 1 workers\n') and out.endswith(' running\n')
  code, out, err = _pod(capfd, 'run', *SLICE, '--workdir', 'code', '--python', str(python),
                        '--', 'train')
  assert code == 2  # a second run while the first goes on is refused on the worker
  assert 'worker ran: launch.py train --config configs/tiny.py' in \
      _pod(capfd, 'logs', *SLICE, '--workdir', 'code')[1]
  code, out, _ = _pod(capfd, 'stop', *SLICE, '--workdir', 'code')
  assert code == 0 and f'sent SIGTERM to pid {pid} on ' in out
  _wait_for(lambda: (pid_file.parent / pid_file.name.replace('.pid', '.exit')).exists())
  assert 'exited 143' in _pod(capfd, 'status', *SLICE, '--workdir', 'code')[1]
  assert 'no run going on' in _pod(capfd, 'stop', *SLICE, '--workdir', 'code')[1]
  # Attached (the default), `pod run` follows the log and exits with the run's status.
  exits.write_text('7\n')
  code, out, _ = _pod(capfd, 'run', *SLICE, '--workdir', 'code', '--python', str(python),
                      '--', 'train')
  assert code == 7


def _wait_for(condition, timeout_s: float = 10.0) -> None:
  import time
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline
    time.sleep(0.05)


def _keep_alive(capfd, python, *extra):
  return _pod(capfd, 'run', *SLICE, '--workdir', 'code', '--python', str(python), '--install',
              'true', '--keep_alive', '--poll_s', '0', *extra, '--', 'train')


def test_keep_alive_waits_for_a_preempted_slice_sets_up_again_and_reruns(capfd, cloud,
                                                                          worker_python):
  python, exits = worker_python
  _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install', 'true')
  exits.write_text('143\n0\n')  # the first run is killed, the second finishes
  cloud.scenario(tpu_states=['READY', 'PREEMPTED', 'PREEMPTED', 'CREATING', 'READY'])
  (cloud.dir / 'calls.jsonl').unlink()
  code, out, _ = _keep_alive(capfd, python)
  assert code == 0, out
  assert cloud.kinds() == ['describe', 'run', 'status',  # killed: 143
                           'describe',  # PREEMPTED: no one to stop
                           'describe', 'describe', 'describe',  # PREEMPTED, CREATING, READY
                           'describe', 'scp', 'setup',  # set up again
                           'run', 'status']  # 0 on every worker
  assert 'keep_alive: the run finished on all 1 workers after 1 restarts' in out
  assert 'comes back only when re-created: give --queued_resource' in out

  # A worker that dies while the slice stays READY: the rest is killed, the run started again.
  exits.write_text('137\n0\n')
  cloud.scenario(tpu_states=['READY'])
  (cloud.dir / 'calls.jsonl').unlink()
  assert _keep_alive(capfd, python)[0] == 0
  assert cloud.kinds() == ['describe', 'run', 'status', 'describe', 'stop',
                           'describe', 'run', 'status']
  assert '-KILL' in cloud.calls()[4][6]


def test_keep_alive_recreates_a_suspended_queued_resource(capfd, cloud, worker_python):
  python, exits = worker_python
  _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install', 'true')
  exits.write_text('0\n')
  cloud.scenario(tpu_states=['READY', 'MISSING', 'MISSING', 'MISSING', 'READY'],
                 queued_states=['SUSPENDED', 'WAITING_FOR_RESOURCES'],
                 runs=[{'exit': 255}, {'exec': True}])  # the machine vanished mid-run
  (cloud.dir / 'calls.jsonl').unlink()
  code, out, _ = _keep_alive(capfd, python, '--queued_resource', 'qr1', '--accelerator_type',
                             'v4-32', '--spot')
  assert code == 0, out
  kinds = cloud.kinds()
  assert kinds[:5] == ['describe', 'run', 'status', 'describe', 'describe']
  assert kinds[5:8] == ['qr-describe', 'qr-delete', 'qr-create']  # SUSPENDED: ask again
  assert kinds[8:] == ['describe', 'qr-describe', 'describe',  # WAITING_FOR_RESOURCES, READY
                       'describe', 'scp', 'setup', 'run', 'status']
  create = cloud.calls()[7]
  assert '--spot' in create and '--node-id=my-v4-32' in create


def test_status_of_a_queued_resource_still_waiting(capfd, cloud):
  cloud.scenario(queued_states=['WAITING_FOR_RESOURCES'], tpu_states=['MISSING'])
  code, out, _ = _pod(capfd, 'status', *SLICE, '--queued_resource', 'qr1')
  assert code == 0 and out.splitlines() == ['queued resource qr1: WAITING_FOR_RESOURCES',
                                            'slice my-v4-32: not created yet']


def test_keep_alive_stops_on_input_mistakes_and_gives_up(capfd, cloud, worker_python):
  python, exits = worker_python
  _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install', 'true')
  exits.write_text('2\n')
  code, out, _ = _keep_alive(capfd, python)
  assert code == 2 and 'exited 2 (a mistake in the input): not retrying' in out
  exits.write_text('1\n1\n1\n')
  code, out, _ = _keep_alive(capfd, python, '--max_restarts', '2')
  assert code == 1 and 'giving up after 2 restarts' in out
  assert out.count('worker ran:') == 3


@pytest.mark.slow
def test_keep_alive_resumes_a_preempted_training_run(capfd, cloud, tmp_path):
  """A real tiny run on the fake worker, sent SIGTERM after its first checkpoint as a TPU VM
  is on preemption: it saves and exits 75; the slice reports PREEMPTED, then READY; keep_alive
  sets up again and reruns the same command, which resumes from the checkpoint and finishes."""
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'  # outlives the worker, as a gs:// run directory would
  _pod(capfd, 'setup', *SLICE, '--workdir', 'code', '--install', 'true')
  cloud.scenario(tpu_states=['READY', 'PREEMPTED', 'PREEMPTED', 'READY'],
                 runs=[{'exec': True, 'preempt_when': str(run_dir / 'checkpoints' / '10'),
                        'signal': 15}, {'exec': True}])
  code, out, _ = _pod(capfd, 'run', *SLICE, '--workdir', 'code', '--python', sys.executable,
                      '--install', 'true', '--keep_alive', '--poll_s', '0', '--',
                      'train', *tiny_flags(tmp_path, run_dir, train__steps=30),
                      '--config.distributed.coordinator=none')  # one process, not a real pod
  assert code == 0, out
  assert cloud.kinds().count('run') == 2 and cloud.kinds().count('setup') == 2
  assert 'the run ended with status 75' in out  # saved on SIGTERM
  log = next((cloud.home / 'code' / '.pod').glob('run-*.log')).read_text()
  assert 'resumed from checkpoint step' in log, out + log
  steps = [json.loads(line)['step'] for line in (run_dir / 'metrics.jsonl').read_text().splitlines()
           if json.loads(line).get('kind') == 'train']
  assert steps == sorted(set(steps)) and steps[-1] == 30
