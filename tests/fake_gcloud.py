"""A stand-in for the `gcloud` CLI, for tests of `launch.py pod`: the contract, not our code.

Tests put an executable `gcloud` that runs this file first on PATH. Every call appends its argv
to FAKE_GCLOUD_DIR/calls.jsonl. FAKE_GCLOUD_DIR/scenario.json scripts what the cloud does; each
list is consumed one entry per call, the last entry repeating:

  tpu_states     what `tpu-vm describe` reports: READY, CREATING, PREEMPTED ... or MISSING
  queued_states  what `queued-resources describe` reports: ACTIVE, SUSPENDED ... or MISSING
  workers        how many workers the slice has (`networkEndpoints`); one is simulated
  runs           per `ssh` that starts a run: {"exec": true} runs it; {"exit": 255} runs nothing
                 and fails as a dropped connection does; {"exec": true, "preempt_when": GLOB,
                 "signal": 15} runs it and, once GLOB exists under the worker's home, sends
                 the signal to the process id the run recorded (what a TPU VM does on preemption)

`scp` copies into FAKE_GCLOUD_DIR/home (the one simulated worker's home directory), and every
other `ssh` script runs there with bash, as on a worker.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DIR = Path(os.environ['FAKE_GCLOUD_DIR'])
HOME = DIR / 'home'


def next_entry(key: str, default):
  path = DIR / 'scenario.json'
  scenario = json.loads(path.read_text())
  entries = scenario.get(key) or [default]
  entry = entries.pop(0) if len(entries) > 1 else entries[0]
  scenario[key] = entries
  path.write_text(json.dumps(scenario))
  return entry


def flag(argv: list[str], name: str) -> str | None:
  prefix = f'--{name}='
  return next((arg[len(prefix):] for arg in argv if arg.startswith(prefix)), None)


def run_script(script: str, run: dict | None = None) -> int:
  HOME.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, HOME=str(HOME))
  process = subprocess.Popen(['bash', '-c', script], cwd=HOME, env=env)
  if run and run.get('preempt_when'):
    while process.poll() is None and not glob.glob(str(HOME / run['preempt_when'])):
      time.sleep(0.1)
    pid_files = glob.glob(str(HOME / '**' / f'.pod/run-{socket.gethostname()}.pid'),
                          recursive=True)
    if process.poll() is None and pid_files:
      os.kill(int(Path(pid_files[0]).read_text()), run.get('signal', signal.SIGTERM))
  return process.wait()


def main(argv: list[str]) -> int:
  with open(DIR / 'calls.jsonl', 'a') as log:
    log.write(json.dumps(argv) + '\n')
  if argv[:3] == ['compute', 'tpus', 'tpu-vm'] and argv[3] == 'describe':
    state = next_entry('tpu_states', 'READY')
    if state == 'MISSING':
      print(f'ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: {argv[4]}', file=sys.stderr)
      return 1
    workers = json.loads((DIR / 'scenario.json').read_text()).get('workers', 1)
    print(json.dumps({'state': state, 'networkEndpoints': [{}] * workers}))
    return 0
  if argv[:3] == ['compute', 'tpus', 'queued-resources']:
    if argv[3] == 'describe':
      state = next_entry('queued_states', 'ACTIVE')
      if state == 'MISSING':
        print('ERROR: NOT_FOUND', file=sys.stderr)
        return 1
      print(json.dumps({'state': {'state': state}}))
    return 0
  if argv[:4] == ['compute', 'tpus', 'tpu-vm', 'scp']:
    HOME.mkdir(parents=True, exist_ok=True)
    local, remote = argv[4], argv[5].split(':', 1)[1]
    (HOME / remote).write_bytes(Path(local).read_bytes())
    return 0
  if argv[:4] == ['compute', 'tpus', 'tpu-vm', 'ssh']:
    script = flag(argv, 'command')
    if 'setsid nohup' in script:  # starts a run
      run = next_entry('runs', {'exec': True})
      return run_script(script, run) if run.get('exec') else run.get('exit', 255)
    return run_script(script)
  print(f'fake gcloud: unexpected call {argv}', file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
