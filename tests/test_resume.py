"""Resume is exact: a run killed (SIGKILL) or preempted (SIGTERM) at an arbitrary step and
started again gives the same per-step losses, bit for bit on CPU, as a run never interrupted.

Every run here is the real CLI in a subprocess; they share the session's persistent compilation
cache (tests/conftest.py), so only the first compiles (the same executables are loaded, which
changes no number).
The killed run's metrics.jsonl holds steps past its last checkpoint; on resume they are
dropped and computed again, so each step must appear exactly once.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

import launch
from errors import EXIT_PREEMPTED
from tests.tiny_run import (ROOT, cli_command, cli_env, run_cli, tiny_flags, train_losses,
                            write_corpus)
from train.metrics import read_metrics

STEPS = 150
FLAGS = {'train__steps': STEPS, 'checkpoint__every': 10}


def _finished_checkpoints(run_dir: Path) -> list[int]:
  folder = run_dir / 'checkpoints'
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _start_and_interrupt(tmp_path: Path, run_dir: Path, sig: int, after_step: int):
  """Starts training, sends `sig` once `after_step` is logged and a checkpoint exists."""
  process = subprocess.Popen(cli_command(['train'] + tiny_flags(tmp_path, run_dir, **FLAGS)),
                             cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and process.poll() is None:
    logged = [r['step'] for r in read_metrics(run_dir, 'train')] if run_dir.exists() else []
    if logged and logged[-1] >= after_step and _finished_checkpoints(run_dir):
      break
    time.sleep(0.02)
  assert process.poll() is None, f'ended before it could be interrupted: {process.stderr.read()}'
  process.send_signal(sig)
  stdout, stderr = process.communicate(timeout=120)
  return process.returncode, stdout, stderr


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
  """Per-step losses of the run never interrupted."""
  tmp_path = tmp_path_factory.mktemp('baseline')
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  result = run_cli(['train'] + tiny_flags(tmp_path, run_dir, **FLAGS))
  assert result.returncode == 0, result.stderr
  losses = train_losses(run_dir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  return losses


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run_bitwise(baseline, tmp_path):
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  code, _, _ = _start_and_interrupt(tmp_path, run_dir, signal.SIGKILL, after_step=35)
  assert code == -signal.SIGKILL
  saved = _finished_checkpoints(run_dir)
  assert saved and saved[-1] < STEPS
  killed_at = max(read_metrics(run_dir, 'train'), key=lambda r: r['step'])['step']

  result = run_cli(['train'] + tiny_flags(tmp_path, run_dir, **FLAGS))
  assert result.returncode == 0, result.stderr
  assert 'resumed from checkpoint step' in result.stderr
  resumed = train_losses(run_dir)  # asserts every step is logged once
  assert sorted(resumed) == list(range(1, STEPS + 1))
  assert resumed == baseline, f'killed after step {killed_at}, losses differ after resume'


@pytest.mark.slow
def test_sigterm_saves_exits_75_and_resumes_exactly(baseline, tmp_path, capsys):
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  code, _, stderr = _start_and_interrupt(tmp_path, run_dir, signal.SIGTERM, after_step=25)
  assert code == EXIT_PREEMPTED == 75
  assert stderr.strip().splitlines()[-1].startswith('stopped: preempted (SIGTERM) at step ')
  stopped_at = int(stderr.split('at step ')[-1].split(':')[0])
  assert _finished_checkpoints(run_dir)[-1] == stopped_at  # saved the step it was on
  assert max(r['step'] for r in read_metrics(run_dir, 'train')) == stopped_at
  meta = json.loads((run_dir / 'checkpoints' / str(stopped_at) / 'meta' / 'metadata').read_text())
  assert meta['step'] == meta['data_position'] == stopped_at
  assert meta['config']['model']['d_model'] == 32

  result = run_cli(['train'] + tiny_flags(tmp_path, run_dir, **FLAGS))
  assert result.returncode == 0, result.stderr
  assert f'resumed from checkpoint step {stopped_at} ' in result.stderr
  assert train_losses(run_dir) == baseline

  # The finished run directory serves eval and sample from its latest checkpoint.
  capsys.readouterr()
  assert launch.main(['eval', '--run_dir', str(run_dir)]) == 0
  out = capsys.readouterr().out
  assert out.startswith(f'step {STEPS}: validation loss ') and 'bits/byte' in out
  assert launch.main(['sample', '--run_dir', str(run_dir), '--prompt', 'def ', '--tokens', '20',
                      '--temperature', '0']) == 0
  assert capsys.readouterr().out.startswith('def ')


@pytest.mark.slow
def test_resume_may_raise_grad_accum_steps(tmp_path):
  """A run restarted with more micro-batches (say after running out of memory) is accepted and
  continues with the same per-step losses, to float32 round-off, as a run never changed."""
  write_corpus(tmp_path)
  flags = {'train__steps': 20, 'optim__decay_steps': 20, 'checkpoint__every': 10}
  reference_dir, run_dir = tmp_path / 'reference', tmp_path / 'run'
  assert launch.main(['train'] + tiny_flags(tmp_path, reference_dir, **flags)) == 0
  first = dict(flags, train__steps=10)
  assert launch.main(['train'] + tiny_flags(tmp_path, run_dir, **first)) == 0
  more_micro_batches = dict(flags, train__grad_accum_steps=4)
  assert launch.main(['train'] + tiny_flags(tmp_path, run_dir, **more_micro_batches)) == 0
  assert json.loads((run_dir / 'config.json').read_text())['train']['grad_accum_steps'] == 4
  resumed, reference = train_losses(run_dir), train_losses(reference_dir)
  assert sorted(resumed) == sorted(reference) == list(range(1, 21))
  for step in range(11, 21):
    assert resumed[step] == pytest.approx(reference[step], rel=1e-5), step
