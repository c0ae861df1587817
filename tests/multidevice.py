"""Helpers for tests that need several (simulated) devices: run worker scripts in subprocesses.

The test session itself runs on one CPU device, and XLA_FLAGS must be set before jax starts,
so every multi-device check starts `python tests/<worker>.py` with its own device count and
reads the JSON lines it prints. Workers batch many configurations into one process, since
each start costs a few seconds.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker_command(script: str, *args: str) -> list[str]:
  return [sys.executable, str(ROOT / 'tests' / script), *args]


def start(script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
  """Starts a worker; its stdout (JSON lines) and stderr are captured."""
  full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
  full_env.pop('XLA_FLAGS', None)  # the worker sets its own device count
  return subprocess.Popen(worker_command(script, *args), cwd=ROOT, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_command(argv: list[str], devices: int) -> subprocess.Popen:
  """Starts `python ARGV...` in the repository with `devices` simulated CPU devices."""
  env = {**os.environ, 'PYTHONUNBUFFERED': '1',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout_s: float) -> tuple[int, list[dict], str]:
  """(exit status, the JSON lines printed, stderr); kills and reaps the worker on timeout.
  All of stdout is kept as `process.stdout_text`."""
  try:
    out, err = process.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    process.kill()
    out, err = process.communicate()
    raise AssertionError(f'worker timed out after {timeout_s}s; stderr tail:\n{err[-3000:]}')
  process.stdout_text = out
  lines = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
  return process.returncode, lines, err


def finish_all(processes: list[subprocess.Popen], timeout_s: float) -> list[tuple]:
  """`finish` for each; if one fails to finish, the others are killed and reaped too."""
  try:
    return [finish(process, timeout_s) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.communicate()


def run(script: str, *args: str, timeout_s: float = 300) -> list[dict]:
  """Runs a worker to the end and returns its JSON lines; fails the test if it fails."""
  code, lines, err = finish(start(script, *args), timeout_s)
  assert code == 0, f'{script} exited with {code}; stderr tail:\n{err[-3000:]}'
  return lines


def jobs_arg(jobs: list[dict]) -> str:
  return json.dumps(jobs)
