"""Helpers for sweep tests: a sweep config file of a tiny model, the study it made, the sweep CLI.

`write_sweep_config(tmp_path, space, **settings)` writes a config file like those in
configs/sweeps/ (the tiny d32, 2-layer byte model of tests/tiny_run.py on the synthetic corpus,
trials under tmp_path/runs) and returns its path.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import ml_collections
import optuna

from tests.tiny_run import ROOT, cli_command, write_corpus

TINY_RUN = {
    'data.validation_fraction': 0.1, 'data.seq_len': 32,
    'model.d_model': 32, 'model.n_layers': 2, 'model.n_heads': 2, 'model.max_len': 32,
    'train.batch_size': 8, 'train.steps': 20, 'train.log_every': 5, 'train.eval_every': 10,
    'train.eval_batches': 2, 'train.sample_tokens': 0, 'optim.warmup_steps': 5,
    'checkpoint.every': 10, 'checkpoint.keep': 100,
}


def _nested(flat: dict) -> dict:
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def write_sweep_config(tmp_path: Path, space: dict, name: str = 'sweep', run: dict | None = None,
                       **sweep) -> Path:
  """A sweep config file over `space` ({config key: spec}); `run` and `sweep` set values."""
  write_corpus(tmp_path)
  values = {**TINY_RUN, 'name': name, 'run_root': str(tmp_path / 'runs'),
            'data.source': str(tmp_path / 'corpus.txt'),
            'data.cache_dir': str(tmp_path / 'cache'), **(run or {})}
  settings = {'heartbeat_s': 1, 'stale_after_s': 3, **sweep}
  path = tmp_path / f'{name}_config.py'
  path.write_text(f'''"""A test sweep."""
import ml_collections
from configs import base
from configs.sweeps.base import sweep_section


def get_config():
  c = base.get_config()
  for key, value in {values!r}.items():
    *parents, leaf = key.split('.')
    node = c
    for part in parents:
      node = node[part]
    node[leaf] = value
  c.sweep = sweep_section()
  c.sweep.space = ml_collections.ConfigDict({_nested(space)!r})
  for key, value in {settings!r}.items():
    c.sweep[key] = value
  return c
''')
  return path


def sweep_dir(tmp_path: Path, name: str = 'sweep') -> Path:
  return tmp_path / 'runs' / 'sweeps' / name


def load_study(tmp_path: Path, name: str = 'sweep', url: str | None = None) -> optuna.Study:
  url = url or f'sqlite:///{sweep_dir(tmp_path, name) / "study.db"}'
  return optuna.load_study(study_name=name, storage=url)


def by_state(study: optuna.Study) -> dict[str, list]:
  states = {}
  for trial in study.get_trials(deepcopy=False):
    states.setdefault(trial.state.name, []).append(trial)
  return states


def start_sweep(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
  """`launch.py sweep --config CONFIG ARGS` in the background, output captured."""
  full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
  full_env.pop('XLA_FLAGS', None)
  full_env.update(env or {})
  return subprocess.Popen(cli_command(['sweep', '--config', str(config), *args]), cwd=ROOT,
                          env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout_s: float = 300) -> tuple[int, str, str]:
  """(exit status, stdout, stderr); kills and reaps the process (and its group) on timeout."""
  try:
    out, err = process.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    out, err = process.communicate()
    raise AssertionError(f'sweep timed out after {timeout_s}s:\n{out[-2000:]}\n{err[-3000:]}')
  return process.returncode, out, err


def wait_for(predicate, timeout_s: float, process: subprocess.Popen | None = None,
             what: str = 'the condition') -> None:
  """Polls `predicate` until true; fails if `process` exits first or time runs out."""
  deadline = time.monotonic() + timeout_s
  while not predicate():
    if process is not None and process.poll() is not None:
      out, err = process.communicate()
      raise AssertionError(f'the sweep exited ({process.returncode}) before {what}:\n'
                           f'{out[-2000:]}\n{err[-3000:]}')
    if time.monotonic() > deadline:
      raise AssertionError(f'timed out waiting for {what}')
    time.sleep(0.05)


def records(run_dir: Path, kind: str) -> list[dict]:
  path = Path(run_dir) / 'metrics.jsonl'
  return [r for r in map(json.loads, path.read_text().splitlines()) if r['kind'] == kind]


def flat_config(path: Path) -> dict:
  from train.config import flatten  # pylint: disable=import-outside-toplevel
  return flatten(ml_collections.ConfigDict(json.loads(Path(path).read_text())))
