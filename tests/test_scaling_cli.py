"""`launch.py scaling fit` and `scaling predict` end to end, and their input errors."""

import json

import numpy as np
import pytest

import launch
from experiments.scaling_points import write_points_csv
from experiments.scaling_synthetic import CHINCHILLA_LAW, isoflop_points


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('fit')
  points = isoflop_points(CHINCHILLA_LAW, np.geomspace(1e18, 1e21, 4), 5, noise=0.002, seed=0)
  write_points_csv(points, tmp / 'points.csv')
  code = launch.main(['scaling', 'fit', '--points', str(tmp / 'points.csv'), '--out',
                      str(tmp / 'out'), '--samples', '5', '--lbfgs_starts', '3'])
  assert code == 0
  return tmp


@pytest.mark.slow
def test_fit_writes_report_json_and_plots(fitted):
  out = fitted / 'out'
  doc = json.loads((out / 'scaling_fit.json').read_text())
  assert {'approach1', 'approach2', 'approach3', 'published', 'budgets'} <= set(doc)
  assert doc['flops_convention'] == 'flops column'
  assert doc['approach3']['alpha'] == pytest.approx(0.34, abs=0.03)
  assert doc['approach2']['intervals']['a'][0] <= doc['approach2']['a'] <= \
      doc['approach2']['intervals']['a'][1]
  report = (out / 'scaling_report.md').read_text()
  assert 'Chinchilla (published)' in report and '| alpha |' in report and 'tokens/param' in report
  for name in ('isoflop.png', 'allocation.png', 'loss_compute.png', 'law_contours.png'):
    assert (out / name).stat().st_size > 10_000


@pytest.mark.slow
def test_predict_prints_the_allocation_of_each_approach(fitted, capsys):
  path = fitted / 'out' / 'scaling_fit.json'
  assert launch.main(['scaling', 'predict', '--fit', str(path), '--flops', '1e21']) == 0
  out = capsys.readouterr().out
  doc = json.loads(path.read_text())
  law = doc['approach3']
  n_opt = law['G'] * (1e21 / 6) ** law['a']  # the paper's closed form, by hand
  row = next(l for l in out.splitlines() if l.startswith('approach3')).split()
  assert float(row[1]) == pytest.approx(n_opt, rel=1e-3)
  assert float(row[2]) == pytest.approx(1e21 / 6 / n_opt, rel=1e-3)
  loss = law['E'] + law['A'] / n_opt ** law['alpha'] + law['B'] / (1e21 / 6 / n_opt) ** law['beta']
  assert float(row[4]) == pytest.approx(loss, abs=1e-4)
  two = next(l for l in out.splitlines() if l.startswith('approach2')).split()
  assert float(two[1]) == pytest.approx(doc['approach2']['k_n'] * 1e21 ** doc['approach2']['a'],
                                        rel=1e-3)


def test_input_mistakes_exit_2(tmp_path, capsys):
  bad = tmp_path / 'bad.csv'
  bad.write_text('params,loss\n1,2\n')
  assert launch.main(['scaling', 'fit', '--points', str(bad)]) == 2
  assert launch.main(['scaling', 'fit', '--points', str(tmp_path / 'missing.csv')]) == 2
  assert launch.main(['scaling', 'predict', '--fit', str(tmp_path / 'nofit.json'),
                      '--flops', '1e20']) == 2
  assert launch.main(['scaling', 'frobnicate']) == 2
  assert 'use one of run, fit, predict' in capsys.readouterr().err
  assert launch.main(['scaling', '--help']) == 0


def test_fit_from_run_directories_writes_their_points_and_curves(tmp_path, capsys):
  from tests.test_isoflop_plan import _fake_run
  for name, width, loss in (('a', 32, 2.6), ('b', 64, 2.4), ('c', 96, 2.5)):
    _fake_run(tmp_path / name, [10, 20, 30], [3.0, 2.8, loss + 0.1], loss, d_model=width)
  out = tmp_path / 'out'
  assert launch.main(['scaling', 'fit', '--runs', *(str(tmp_path / n) for n in 'abc'), '--out',
                      str(out), '--samples', '3', '--lbfgs_starts', '2']) == 0
  points = (out / 'points.csv').read_text().splitlines()
  assert points[0] == 'params,tokens,loss,flops,non_embedding_params,name' and len(points) == 4
  assert len(json.loads((out / 'curves.json').read_text())) == 3
  doc = json.loads((out / 'scaling_fit.json').read_text())
  assert doc['flops_convention'].startswith('chinchilla: Chinchilla appendix F')
  assert 'error' in doc['approach2']  # one budget: no power law through one vertex
  assert 'not fitted' in (out / 'scaling_report.md').read_text()
  assert launch.main(['scaling', 'fit', '--runs', str(tmp_path / 'a'), '--out', str(out),
                      '--flops_convention', 'kaplan']) == 2
