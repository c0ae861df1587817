"""Several workers on one study: `--workers 2` on the default SQLite file, and two workers on a
real PostgreSQL server (as on several machines). Every grid point is trained exactly once, by
one worker, and none is lost; both workers take part."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import portpicker
import pytest
from optuna.trial import TrialState

from tests.sweep_helpers import finish, load_study, records, start_sweep, sweep_dir, \
    write_sweep_config
from tests.tiny_run import run_cli

SPACE = {'optim.lr': 'choice(3e-3, 1e-2)', 'optim.warmup_steps': 'choice(0, 5)'}
GRID = {(lr, warmup) for lr in (3e-3, 1e-2) for warmup in (0, 5)}
POSTGRES_BIN = Path('/usr/lib/postgresql/15/bin')


def _check_each_point_once(study, directory):
  trials = study.get_trials()
  assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, [t.state for t in trials]
  points = [(t.params['optim.lr'], t.params['optim.warmup_steps']) for t in trials]
  assert sorted(points) == sorted(GRID)  # all four, none twice
  for trial in trials:
    run_dir = directory / trial.user_attrs['run_dir']
    assert len(records(run_dir, 'summary')) == 1  # trained once
    assert [r['step'] for r in records(run_dir, 'train')] == [5, 10, 15, 20]
  return {t.user_attrs['worker'] for t in trials}


@pytest.mark.slow
def test_two_local_workers_share_one_sqlite_study(tmp_path):
  config = write_sweep_config(tmp_path, SPACE)
  code, out, err = finish(start_sweep(config, '--workers', '2'), timeout_s=600)
  assert code == 0, err[-3000:]
  workers = _check_each_point_once(load_study(tmp_path), sweep_dir(tmp_path))
  assert len(workers) == 2  # both worker processes trained trials
  assert 'sweep sweep: 4/4 done (4 complete, 0 pruned, 0 failed), 0 running' in out
  assert (sweep_dir(tmp_path) / 'trials.md').is_file()  # the summary, written once at the end


def _as_postgres(*command: str, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(['runuser', '-u', 'postgres', '--', *command], check=True,
                        capture_output=True, text=True, **kwargs)


@pytest.fixture
def postgres_url():
  """A PostgreSQL 15 server on loopback, in a temporary directory, removed afterwards."""
  if not (POSTGRES_BIN / 'initdb').exists() or shutil.which('runuser') is None:
    pytest.skip(f'PostgreSQL binaries are not installed ({POSTGRES_BIN}/initdb missing)')
  root = Path(tempfile.mkdtemp(prefix='sweep_pg_'))
  data = root / 'data'
  os.chmod(root, 0o755)
  shutil.chown(root, 'postgres', 'postgres')
  port = portpicker.pick_unused_port()
  _as_postgres(str(POSTGRES_BIN / 'initdb'), '-D', str(data), '-A', 'trust', '-U', 'postgres')
  try:
    _as_postgres(str(POSTGRES_BIN / 'pg_ctl'), '-D', str(data), '-w', '-l', str(root / 'log'),
                 '-o', f'-p {port} -k {root} -c listen_addresses=127.0.0.1', 'start',
                 timeout=120)
    yield f'postgresql+psycopg://postgres@127.0.0.1:{port}/postgres'
  finally:
    subprocess.run(['runuser', '-u', 'postgres', '--', str(POSTGRES_BIN / 'pg_ctl'), '-D',
                    str(data), '-m', 'immediate', 'stop'], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
  config = write_sweep_config(tmp_path, SPACE)
  # Started together: one creates the study and queues the grid, the other joins it.
  workers = [start_sweep(config, '--storage', postgres_url),
             start_sweep(config, '--storage', postgres_url, '--no_summary')]
  try:
    results = [finish(worker, timeout_s=600) for worker in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.communicate()
  for code, _, err in results:
    assert code == 0, err[-3000:]
  study = load_study(tmp_path, url=postgres_url)
  assert len(_check_each_point_once(study, sweep_dir(tmp_path))) == 2
  assert not (sweep_dir(tmp_path) / 'study.db').exists()  # the server held the study
  summary = run_cli(['sweep', '--summarize', postgres_url])
  assert summary.returncode == 0, summary.stderr
  assert summary.stdout.count(' complete ') == 4
