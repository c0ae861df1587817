"""The summary of a sweep, on a study of known trials (no training): the table best first with
every state and its reason, trials.csv / trials.md, the plots (importances only with enough
trials), and a best config that loads as a run config with the best parameters."""

import csv
import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

import launch
from experiments import sweep_summary
from tests.sweep_helpers import TINY_RUN
from train.config import load_config

PNG = b'\x89PNG\r\n\x1a\n'
LRS = (1e-4, 1e-3, 1e-2, 1e-1)
WARMUPS = (0, 10)
DISTRIBUTIONS = {'optim.lr': CategoricalDistribution(LRS),
                 'optim.warmup_steps': CategoricalDistribution(WARMUPS)}


def _loss(lr: float, warmup: int) -> float:
  """A U in log lr, lowest at 1e-2, slightly better with warmup."""
  return 2.0 + (math.log10(lr) + 2.0) ** 2 - 0.01 * warmup


def _make_study(tmp_path) -> optuna.Study:
  from configs.base import get_config
  run_config = get_config()
  for key, value in TINY_RUN.items():
    section, leaf = key.split('.')
    run_config[section][leaf] = value
  study = optuna.create_study(study_name='known', storage=f'sqlite:///{tmp_path}/study.db')
  study.set_user_attr('space', {'optim.lr': 'choice(1e-4, 1e-3, 1e-2, 1e-1, log=True)',
                                'optim.warmup_steps': 'choice(0, 10)'})
  study.set_user_attr('metric', 'validation_loss')
  study.set_user_attr('run_config', json.loads(run_config.to_json_best_effort()))
  number = 0
  for lr in LRS:
    for warmup in WARMUPS:
      params = {'optim.lr': lr, 'optim.warmup_steps': warmup}
      run_dir = tmp_path / f'trial_{number:04d}'
      run_dir.mkdir()
      loss = _loss(lr, warmup)
      (run_dir / 'metrics.jsonl').write_text(''.join(
          json.dumps(r) + '\n' for r in ({'kind': 'train', 'step': 10, 'loss': loss + 1},
                                         {'kind': 'eval', 'step': 10, 'loss': loss + 0.5},
                                         {'kind': 'eval', 'step': 20, 'loss': loss})))
      attrs = {'run_dir': run_dir.name, 'steps': 20, 'wall_s': 65.0, 'reason': 'complete'}
      state, value = TrialState.COMPLETE, loss
      if lr == 1e-1 and warmup == 0:
        state, value = TrialState.PRUNED, None
        attrs.update(steps=10, reason='pruned at step 10 (validation loss 9.0000)')
      study.add_trial(create_trial(state=state, value=value, params=params,
                                   distributions=DISTRIBUTIONS, user_attrs=attrs,
                                   intermediate_values={10: loss + 0.5}))
      number += 1
  study.add_trial(create_trial(  # non-finite: failed for good
      state=TrialState.FAIL, params={'optim.lr': 1e-1, 'optim.warmup_steps': 10},
      distributions=DISTRIBUTIONS, user_attrs={'run_dir': 'trial_0008', 'reason': '10 updates '
                                               'in a row had a non-finite loss', 'steps': 12}))
  study.add_trial(create_trial(  # its worker vanished; retried by the next trial
      state=TrialState.FAIL, params={'optim.lr': 1e-3, 'optim.warmup_steps': 0},
      distributions=DISTRIBUTIONS, user_attrs={'run_dir': 'trial_0009', 'reason': 'running'}))
  study.add_trial(create_trial(
      state=TrialState.COMPLETE, value=1.5, params={'optim.lr': 1e-3, 'optim.warmup_steps': 0},
      distributions=DISTRIBUTIONS, system_attrs={'failed_trial': 9, 'retry_history': [9]},
      user_attrs={'run_dir': 'trial_0009', 'reason': 'complete', 'resumed_from_step': 40,
                  'steps': 100, 'wall_s': 12.0}))
  (tmp_path / 'trial_0009').mkdir()
  return study


def test_table_files_plots_and_best_config(tmp_path, capsys):
  study = _make_study(tmp_path)
  text = sweep_summary.summarize(study, tmp_path)
  rows = list(csv.DictReader((tmp_path / 'trials.csv').open()))
  assert [r['trial'] for r in rows[:3]] == ['10', '5', '4']  # 1.5, then the U's bottom
  assert [r['state'] for r in rows] == ['complete'] * 8 + ['pruned', 'failed', 'retried']
  values = [float(r['validation_loss']) for r in rows[:8]]
  assert values == sorted(values) and values[1] == pytest.approx(_loss(1e-2, 10))
  assert rows[0]['note'] == 'resumed from step 40'
  assert rows[8]['note'].startswith('pruned at step 10') and rows[8]['steps'] == '10'
  assert 'non-finite' in rows[9]['note'] and rows[9]['validation_loss'] == ''
  assert rows[10]['note'] == 'worker lost (no heartbeat)'
  assert rows[1]['wall_s'] == '65.0' and rows[1]['optim.lr'] == '0.01'
  markdown = (tmp_path / 'trials.md').read_text().splitlines()
  assert len(markdown) == 2 + 11 and markdown[2].startswith('| 10 | complete | 1.5000 |')
  assert markdown[3] == '| 5 | complete | 1.9000 | 0.01 | 10 | 20 | 1:05 | trial_0005 |  |'
  assert text.splitlines()[1].startswith('10     complete  1.5000')
  for name in ('metric_vs_optim.lr.png', 'metric_vs_optim.warmup_steps.png', 'history.png',
               'curves.png', 'importance.png'):
    assert (tmp_path / name).read_bytes().startswith(PNG), name

  best = load_config(str(tmp_path / 'best_config.py'))
  assert best.optim.lr == 1e-3 and best.optim.warmup_steps == 0 and best.name == 'known-best'
  assert best.model.d_model == 32 and 'sweep' not in best
  assert 'launch.py train --config' in (tmp_path / 'best_config.py').read_text()

  # --summarize reads the same study back through its store.
  capsys.readouterr()
  assert launch.main(['sweep', '--summarize', str(tmp_path)]) == 0
  assert capsys.readouterr().out.splitlines()[1].startswith('10     complete  1.5000')


def test_no_importances_with_few_trials(tmp_path):
  study = optuna.create_study(study_name='few', storage=f'sqlite:///{tmp_path}/study.db')
  study.set_user_attr('space', {'optim.lr': 'choice(1e-3, 1e-2)', 'optim.b2': 'choice(0.9, 0.99)'})
  for lr, b2, value in ((1e-3, 0.9, 2.0), (1e-2, 0.99, 1.0)):
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=value, params={'optim.lr': lr, 'optim.b2': b2},
        distributions={'optim.lr': CategoricalDistribution((1e-3, 1e-2)),
                       'optim.b2': CategoricalDistribution((0.9, 0.99))}))
  text = sweep_summary.summarize(study, tmp_path)
  assert 'importance.png' not in text and not (tmp_path / 'importance.png').exists()
  assert (tmp_path / 'history.png').exists()
