"""`launch.py scaling run`: an IsoFLOP study planned, trained through the sweep engine, fitted,
and run again without training anything twice (the CI smoke version of the tiny study)."""

import json

import pytest

import launch
from experiments import sweep_space
from tests.tiny_run import snapshot, write_corpus
from train.metrics import read_metrics


def study_flags(tmp_path) -> list[str]:
  values = {
      'name': 'smoke', 'run_root': tmp_path / 'runs',
      'data.source': tmp_path / 'corpus.txt', 'data.cache_dir': tmp_path / 'cache',
      'data.validation_fraction': 0.1, 'data.seq_len': 32, 'model.max_len': 32,
      'train.batch_size': 8, 'train.eval_batches': 2, 'train.log_every': 5,
      'checkpoint.every': 0, 'optim.warmup_steps': 5,
      'study.budgets': '1e9,3e9', 'study.sizes': 3, 'study.min_params': 1e4,
      'study.max_params': 1.2e5, 'study.min_steps': 10, 'study.samples': 5,
      'study.lbfgs_starts': 3,
  }
  return (['scaling', 'run', '--config', 'configs/scaling/tiny_isoflop.py'] +
          [f'--config.{key}={value}' for key, value in values.items()])


def test_explicit_points_become_choice_dimensions_that_hold_every_point():
  points = [{'model.d_model': 32, 'train.steps': 50}, {'model.d_model': 64, 'train.steps': 20},
            {'model.d_model': 32, 'train.steps': 80}]
  dims = {d.key: d for d in sweep_space.point_dimensions(points)}
  assert dims['model.d_model'].values == (32, 64)
  assert dims['train.steps'].values == (50, 20, 80)
  with pytest.raises(ValueError):
    sweep_space.point_dimensions([{'a': 1}, {'b': 2}])


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
  write_corpus(tmp_path)
  assert launch.main(study_flags(tmp_path) + ['--dry_run']) == 0
  out = capsys.readouterr().out
  assert 'runs (FLOPs per token by chinchilla)' in out and 'C1.00e09_L1_d32' in out
  assert not (tmp_path / 'runs').exists()


def test_bad_budgets_are_one_line_errors(tmp_path, capsys):
  write_corpus(tmp_path)
  assert launch.main(study_flags(tmp_path) + ['--config.study.budgets=1e9,x']) == 2
  assert 'study.budgets' in capsys.readouterr().err


@pytest.mark.slow
def test_a_study_runs_fits_and_reuses_its_finished_runs(tmp_path, capsys):
  write_corpus(tmp_path)
  assert launch.main(study_flags(tmp_path)) == 0
  study_dir = tmp_path / 'runs' / 'scaling' / 'smoke'
  out = capsys.readouterr().out
  planned = int(out.split(' runs (FLOPs')[0].split()[-1])
  trial_dirs = sorted(study_dir.glob('trial_*'))
  assert len(trial_dirs) == planned >= 4
  for run_dir in trial_dirs:  # each run trained exactly its planned steps, on its own schedule
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['optim']['decay_steps'] == 0
    assert read_metrics(run_dir, 'train')[-1]['step'] == config['train']['steps']
  fit = json.loads((study_dir / 'fit' / 'scaling_fit.json').read_text())
  assert 'approach3' in json.dumps(fit)
  assert (study_dir / 'fit' / 'scaling_report.md').is_file()
  assert (study_dir / 'fit' / 'points.csv').read_text().count('\n') == planned + 1

  before = {run_dir.name: snapshot(run_dir) for run_dir in trial_dirs}
  assert launch.main(study_flags(tmp_path)) == 0  # the same study again: nothing retrains
  assert sorted(p.name for p in study_dir.glob('trial_*')) == [d.name for d in trial_dirs]
  assert {run_dir.name: snapshot(run_dir) for run_dir in trial_dirs} == before
