"""The three Chinchilla approaches recover a known law, and their bootstrap intervals cover it."""

import numpy as np
import pytest

from experiments import scaling_fits as fits
from experiments.scaling_bootstrap import fit_all
from experiments.scaling_synthetic import CHINCHILLA_LAW, derived_law, isoflop_points, loss_curves

TRUE = derived_law(CHINCHILLA_LAW)  # a = 0.28 / 0.62 = 0.4516
BUDGETS = np.geomspace(1e18, 1e21, 4)
SMALL_GRID = dict(alpha=[0.5], beta=[0.5], e=[0.0, 1.0], a=[5.0], b=[5.0])


def test_objective_gradient_matches_finite_differences():
  p = isoflop_points(CHINCHILLA_LAW, BUDGETS, 5, noise=0.01, seed=3)
  args = (np.log(p['params']), np.log(p['tokens']), np.log(p['loss']), fits.HUBER_DELTA)
  theta = np.array([6.1, 5.9, 0.4, 0.33, 0.29])
  value, grad = fits._objective(theta, *args)
  step = 1e-6 * np.eye(5)
  numeric = [(fits._objective(theta + s, *args)[0] - fits._objective(theta - s, *args)[0]) / 2e-6
             for s in step]
  assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-9)
  assert fits.objective_at(theta[None], *args)[0] == pytest.approx(value)


def test_power_law_and_parabola_vertex_by_hand():
  law = fits.power_law(np.array([1e3, 1e5, 1e7]), 2.5 * np.array([1e3, 1e5, 1e7]) ** 0.7)
  assert law['exponent'] == pytest.approx(0.7) and law['k'] == pytest.approx(2.5)
  params = np.geomspace(1e6, 1e8, 5)  # loss = 2 + 0.1 (ln N - ln 1e7)^2, flops = 6 N D
  tokens = 1e18 / (6 * params)
  vertex = fits.isoflop_vertex(params, tokens, 2 + 0.1 * np.log(params / 1e7) ** 2, 6 * params * tokens)
  assert vertex['params'] == pytest.approx(1e7) and vertex['loss'] == pytest.approx(2.0)
  assert vertex['tokens'] == pytest.approx(1e18 / 6e7)


def test_approach3_recovers_the_law_from_exact_points():
  p = isoflop_points(CHINCHILLA_LAW, BUDGETS, 5)
  law = fits.approach3(p['params'], p['tokens'], p['loss'], starts=fits.grid_starts(SMALL_GRID))
  for key in ('E', 'A', 'B', 'alpha', 'beta', 'a', 'G'):
    assert law[key] == pytest.approx(TRUE[key], rel=1e-3), key


def test_approaches_1_and_2_recover_the_allocation_exponents():
  p = isoflop_points(CHINCHILLA_LAW, np.geomspace(1e18, 1e21, 5), 7)
  second = fits.approach2(p['params'], p['tokens'], p['loss'], p['flops'])
  assert second['a'] == pytest.approx(TRUE['a'], abs=0.01)
  assert second['b'] == pytest.approx(TRUE['b'], abs=0.01)
  curves = loss_curves(CHINCHILLA_LAW, np.geomspace(1e7, 1e11, 40), 1e22)
  first = fits.approach1(curves)
  assert first['a'] == pytest.approx(TRUE['a'], abs=0.01)
  n_opt, _ = fits.law_optimum(TRUE, 1e20)
  assert first['k_n'] * 1e20 ** first['a'] == pytest.approx(n_opt, rel=0.1)


def test_pareto_frontier_keeps_the_best_point_of_equal_compute():
  front = fits.pareto_frontier(np.array([1., 2., 3., 4.]), np.ones(4), np.array([3.0, 2.5, 2.6, 2.4]),
                               np.array([10., 10., 20., 20.]))
  assert front['params'].tolist() == [2., 4.] and front['loss'].tolist() == [2.5, 2.4]


def test_budgets_are_grouped_by_relative_distance():
  labels = fits.group_budgets(np.array([1e18, 1.05e18, 1e19, 0.97e19, 1e20]))
  assert labels.tolist() == [0, 0, 1, 1, 2]


@pytest.mark.slow
def test_intervals_cover_the_truth_in_most_noisy_replications():
  covered = {'approach2 a': 0, 'approach3 alpha': 0, 'approach3 beta': 0, 'approach3 E': 0,
             'approach3 a': 0}
  replications = 4
  for seed in range(replications):
    p = isoflop_points(CHINCHILLA_LAW, BUDGETS, 6, noise=0.01, seed=seed)
    result = fit_all(p, samples=20, seed=seed, grid=SMALL_GRID)
    for name in covered:
      approach, key = name.split()
      low, high = result[f'approach{approach[-1]}']['intervals'][key]
      covered[name] += low <= TRUE[key] <= high
  assert all(count >= replications - 1 for count in covered.values()), covered
