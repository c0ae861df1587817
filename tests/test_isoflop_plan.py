"""IsoFLOP study plan (budgets x ladder -> runs) and the points table read back from runs."""

import json

import numpy as np
import pytest

from configs import base
from experiments.isoflop_plan import format_plan, plan_isoflop, plan_study
from experiments.ladder import ladder, shape_config
from experiments.scaling_points import points_from_runs
from models.config import TransformerConfig
from models.counting import non_embedding_param_count, param_count, training_flops_per_token
from tests.tiny_run import tiny_flags, write_corpus

BASE = TransformerConfig(vocab_size=256, max_len=32)


def test_plan_gives_each_run_its_budget_and_its_own_schedule_length():
  rungs = ladder(BASE, 3, 2e4, 1e5, aspect_ratio=16, head_dim=16)
  runs, skipped = plan_isoflop([3e12, 1e12], rungs, BASE, seq_len=32, batch_size=8,
                               convention='chinchilla', min_steps=20, warmup_steps=5)
  assert [r.budget for r in runs] == sorted(r.budget for r in runs)
  for run in runs:
    model = shape_config(BASE, run.rung.n_layers, run.rung.d_model, 16)
    per_token = training_flops_per_token(model, 32, 'chinchilla')
    assert run.flops_per_token == per_token
    assert run.steps == round(run.budget / per_token / 256) and run.tokens == run.steps * 256
    assert abs(run.flops - run.budget) <= per_token * 256 / 2  # within half a step
    assert run.overrides['train.steps'] == run.steps
    assert run.overrides['optim.decay_steps'] == 0  # cosine as long as train.steps
    assert run.overrides['model.d_model'] == run.rung.d_model
  assert len(runs) + len(skipped) == 6
  tiny_budget = plan_isoflop([1e9], rungs, BASE, 32, 8, 'chinchilla', min_steps=20)
  assert tiny_budget[0] == [] and all('fewer than 20' in s for s in tiny_budget[1])


def test_plan_study_reads_the_run_config():
  from train.config import load_config
  config = load_config('configs/tiny.py', ['--config.data.seq_len=64', '--config.train.batch_size=4'])
  runs, skipped = plan_study(config, [1e14, 3e14], 3, 2e5, 1e6, min_steps=10)
  base = TransformerConfig.from_dict(config.model)
  expected, _ = plan_isoflop([1e14, 3e14], ladder(base, 3, 2e5, 1e6, 32.0, 64), base, 64, 4,
                             'chinchilla', 10, config.optim.warmup_steps)
  assert runs == expected and len(runs) + len(skipped) == 6
  table = format_plan(runs, skipped, 'chinchilla')
  assert all(r.name in table for r in runs) and 'chinchilla' in table


def _fake_run(run_dir, steps, losses, eval_loss, d_model=32):
  config = base.get_config()
  config.model.d_model, config.model.n_layers, config.model.n_heads = d_model, 2, 2
  config.model.max_len = config.data.seq_len = 32
  config.train.batch_size = 4
  run_dir.mkdir()
  (run_dir / 'config.json').write_text(config.to_json())
  records = [{'kind': 'train', 'step': s, 'loss': l} for s, l in zip(steps, losses)]
  records.append({'kind': 'eval', 'step': steps[-1] // 2, 'loss': eval_loss + 1})
  records.append({'kind': 'eval', 'step': steps[-1], 'loss': eval_loss})
  (run_dir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  return TransformerConfig.from_dict(config.model)


def test_points_from_run_directories_by_hand(tmp_path):
  model = _fake_run(tmp_path / 'a', [10, 20, 30], [3.0, 2.5, 2.2], 2.4)
  _fake_run(tmp_path / 'b', [10, 20], [3.1, 2.7], 2.6, d_model=64)
  points, curves = points_from_runs([tmp_path / 'a', tmp_path / 'b'])
  per_token = training_flops_per_token(model, 32, 'chinchilla')  # base.py's default convention
  assert points['name'] == ['a', 'b']
  assert points['params'][0] == param_count(model)
  assert points['non_embedding_params'][0] == non_embedding_param_count(model)
  assert points['tokens'][0] == 30 * 4 * 32
  assert points['flops'][0] == pytest.approx(per_token * 30 * 4 * 32)
  assert points['loss'].tolist() == [2.4, 2.6]  # the last evaluation, not the halfway one
  assert curves[0]['tokens'].tolist() == [10 * 128, 20 * 128, 30 * 128]
  assert curves[0]['loss'].tolist() == [3.0, 2.5, 2.2]
  assert np.allclose(curves[0]['flops'], per_token * curves[0]['tokens'])
  six_n, _ = points_from_runs([tmp_path / 'a'], convention='6n')
  assert six_n['flops'][0] == pytest.approx(training_flops_per_token(model, 32, '6n') * 3840)


@pytest.mark.slow
def test_a_planned_run_trains_and_reads_back_as_its_point(tmp_path):
  import launch
  write_corpus(tmp_path)
  rung = ladder(BASE, 1, 1.5e4, 1.5e4, aspect_ratio=16, head_dim=16)
  [run], _ = plan_isoflop([2e10], rung, BASE, seq_len=32, batch_size=8, convention='6n',
                          min_steps=5)
  run_dir = tmp_path / run.name
  flags = tiny_flags(tmp_path, run_dir) + [f'--config.{k}={v}' for k, v in run.overrides.items()
                                           if k != 'name'] + ['--config.scaling.flops_convention=6n']
  assert launch.main(['train'] + flags) == 0
  config = json.loads((run_dir / 'config.json').read_text())
  assert config['train']['steps'] == run.steps and config['optim']['decay_steps'] == 0
  points, curves = points_from_runs([run_dir])
  assert points['tokens'][0] == run.tokens
  assert points['flops'][0] == pytest.approx(run.flops)
  summary = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()
             if '"summary"' in l][-1]
  assert points['loss'][0] == pytest.approx(summary['validation_loss'])
  assert len(curves[0]['loss']) == run.steps  # log_every 1: one train record per step
