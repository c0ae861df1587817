"""Helpers for tests that train: a small synthetic corpus, a tiny model's CLI flags, the CLI in
a subprocess, and snapshots of a directory's files (to prove nothing in it changed)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CORPUS = ''.join(f'def function_{i}(x):\n    return x * {i} + {i % 7}\n\n' for i in range(300))


def write_corpus(tmp_path: Path, text: str = CORPUS) -> Path:
  path = tmp_path / 'corpus.txt'
  path.write_text(text)
  return path


def tiny_flags(tmp_path: Path, run_dir: Path, **overrides) -> list[str]:
  """`launch.py train` arguments for a d32, 2-layer byte model on the synthetic corpus."""
  values = {
      'data.source': tmp_path / 'corpus.txt', 'data.cache_dir': tmp_path / 'cache',
      'data.validation_fraction': 0.1, 'data.seq_len': 32,
      'model.d_model': 32, 'model.n_layers': 2, 'model.n_heads': 2, 'model.max_len': 32,
      'train.batch_size': 8, 'train.steps': 40, 'train.log_every': 1, 'train.eval_every': 0,
      'train.eval_batches': 2, 'train.sample_tokens': 0, 'optim.warmup_steps': 5,
      'checkpoint.every': 10,
  }
  values.update({key.replace('__', '.'): value for key, value in overrides.items()})
  return (['--config', 'configs/tiny.py', '--run_dir', str(run_dir), '--no_progress'] +
          [f'--config.{key}={value}' for key, value in values.items()])


def cli_command(args: list[str]) -> list[str]:
  return [sys.executable, str(ROOT / 'launch.py')] + args


def cli_env(devices: int | None = None, extra: dict | None = None) -> dict:
  """The environment of a CLI subprocess: `devices` simulated CPU devices and any `extra`
  variables (the session's compilation cache, tests/conftest.py, comes with os.environ)."""
  env = dict(os.environ, PYTHONUNBUFFERED='1', **(extra or {}))
  if devices:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip()
  return env


def run_cli(args: list[str], devices: int | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
  """`python launch.py ARGS` in a subprocess, from the repository root (`env`: extra variables)."""
  return subprocess.run(cli_command(args), cwd=ROOT, env=cli_env(devices, env),
                        capture_output=True, text=True, timeout=timeout, check=False)


def snapshot(directory: Path) -> dict[str, str]:
  """{relative path: sha256 of a file, or 'folder'} of everything under `directory`."""
  return {str(path.relative_to(directory)):
          hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else 'folder'
          for path in sorted(Path(directory).rglob('*'))}


def train_losses(run_dir: Path) -> dict[int, float]:
  """{step: loss} of the train records of a run's metrics.jsonl (each step once)."""
  from train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  records = read_metrics(run_dir, 'train')
  steps = [r['step'] for r in records]
  assert len(steps) == len(set(steps)), 'a step is logged twice'
  return {r['step']: r['loss'] for r in records}


_SHARED_RUNS = {}  # one per session: an imported fixture is set up once per importing module


@pytest.fixture(scope='session')
def shared_trained_run(tmp_path_factory) -> Path:
  """One tiny run trained once per test session (20 steps, checkpoints at 10 and 20) for the
  tests that only read a trained run (compression, generate, serve): import this fixture."""
  import launch  # pylint: disable=import-outside-toplevel
  if 'run' in _SHARED_RUNS:
    return _SHARED_RUNS['run']
  tmp_path = tmp_path_factory.mktemp('shared_trained')
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  assert launch.main(['train'] + tiny_flags(tmp_path, run_dir, train__steps=20)) == 0
  _SHARED_RUNS['run'] = run_dir
  return run_dir


def train_steps(tmp_path: Path, steps: int = 3, **overrides):
  """(experiment, losses, params) after `steps` train steps of the tiny model (`tiny_flags`
  with `overrides`) on fixed random tokens, one process, no run directory."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from train.config import load_config  # pylint: disable=import-outside-toplevel
  from train.experiment import build_experiment  # pylint: disable=import-outside-toplevel
  tmp_path.mkdir()
  write_corpus(tmp_path)
  flags = tiny_flags(tmp_path, tmp_path / 'unused', **overrides)
  config = load_config('configs/tiny.py', [f for f in flags if f.startswith('--config.')])
  exp = build_experiment(config, progress=False)
  state = exp.init_state()
  tokens = np.random.default_rng(0).integers(0, 256, (8, 33)).astype(np.int32)
  losses = []
  with exp.mesh_context():
    batch = jax.device_put(tokens, exp.batch_sharding)
    for _ in range(steps):
      state, metrics = exp.train_step(state, batch)
      losses.append(float(metrics['loss']))
  return exp, losses, state.params
