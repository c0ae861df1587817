"""Chinchilla's three ways to fit compute-optimal scaling (Hoffmann et al. 2022, section 3).

Pure functions of arrays; `experiments/scaling_bootstrap.py` adds confidence intervals.

- Approach 1: the envelope of all loss curves (lowest loss reached at each FLOP count) gives an
  (N, D) per FLOP count; power laws N_opt = k_n C^a and D_opt = k_d C^b are fitted in log space.
  Grid points whose envelope sits on the smallest or largest model are dropped (the optimum may
  lie beyond the ladder there). With final points only (no curves) the envelope is the Pareto
  frontier: every point with a lower loss than all points of smaller compute.
- Approach 2: a parabola in log N through each IsoFLOP curve (points of one budget); its vertex
  is N_opt(C); D_opt = C / (k N_opt), k = flops / (N D) interpolated across the curve in log N
  (exactly 6 under the 6N convention); then the same power laws.
- Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as the paper does: Huber loss
  (delta 1e-3) between log L and LSE(a - alpha log N, b - beta log D, e), minimised with L-BFGS
  from a grid of starts; the lowest objective with alpha, beta > 0 wins. The grid is the paper's
  (4,500 starts); by default L-BFGS runs from the `lbfgs_starts` (20) of them with the lowest
  objective at the start (all 4,500 take about an hour per fit on a shared 2-core CPU;
  `lbfgs_starts=0` runs them all, as the paper does). With C = 6 N D (the paper's
  closed form) N_opt = G (C/6)^a, D_opt = (C/6)^b / G, a = beta/(alpha+beta), b = alpha/(alpha+beta),
  G = (alpha A / (beta B))^(1/(alpha+beta)).
"""

import itertools

import numpy as np
from scipy import optimize, special

HUBER_DELTA = 1e-3
# The paper's grid of starts: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
# a, b in {0, 5, ..., 25}.
PAPER_GRID = dict(alpha=np.arange(0, 2.01, 0.5), beta=np.arange(0, 2.01, 0.5),
                  e=np.arange(-1, 1.01, 0.5), a=np.arange(0, 26, 5), b=np.arange(0, 26, 5))


def power_law(x, y) -> dict:
  """y = k x^exponent, least squares in log space."""
  exponent, log_k = np.polyfit(np.log(x), np.log(y), 1)
  return {'exponent': float(exponent), 'k': float(np.exp(log_k))}


def _allocation_laws(flops, n_opt, d_opt) -> dict:
  n_law, d_law = power_law(flops, n_opt), power_law(flops, d_opt)
  return {'a': n_law['exponent'], 'k_n': n_law['k'], 'b': d_law['exponent'], 'k_d': d_law['k']}


# --- approach 1 ---

def envelope(curves: list[dict], grid_size: int = 200) -> dict:
  """Lowest loss at each of `grid_size` log-spaced FLOP counts over curves that reach it.

  Each curve is a dict of 'params' (scalar) and arrays 'flops', 'tokens', 'loss' (increasing
  flops). Returns arrays 'flops', 'params', 'tokens', 'loss' of the interior envelope points.
  """
  sizes = sorted({c['params'] for c in curves})
  low = min(np.min(c['flops']) for c in curves)
  high = max(np.max(c['flops']) for c in curves)
  rows = []
  for flops in np.geomspace(low, high, grid_size):
    best = None
    for c in curves:
      if not c['flops'][0] <= flops <= c['flops'][-1] or len(c['flops']) < 2:
        continue
      loss = np.interp(np.log(flops), np.log(c['flops']), c['loss'])
      if best is None or loss < best[0]:
        tokens = np.exp(np.interp(np.log(flops), np.log(c['flops']), np.log(c['tokens'])))
        best = (loss, c['params'], tokens)
    if best is not None and best[1] not in (sizes[0], sizes[-1]):
      rows.append((flops, best[1], best[2], best[0]))
  return {k: np.array(v) for k, v in zip(('flops', 'params', 'tokens', 'loss'), zip(*rows))} \
      if rows else {k: np.array([]) for k in ('flops', 'params', 'tokens', 'loss')}


def pareto_frontier(params, tokens, loss, flops) -> dict:
  """Points with a lower loss than every point of smaller or equal compute (final points only;
  of points with equal compute, only the lowest loss can be on it)."""
  order = np.lexsort((loss, flops))
  keep, best = [], np.inf
  for i in order:
    if loss[i] < best:
      keep.append(i)
      best = loss[i]
  keep = np.array(keep)
  return {'flops': flops[keep], 'params': params[keep], 'tokens': tokens[keep], 'loss': loss[keep]}


def approach1(curves: list[dict] | None, params=None, tokens=None, loss=None, flops=None) -> dict:
  """Power laws through the envelope of the curves, or through the Pareto frontier of points."""
  if curves:
    front, source = envelope(curves), 'loss curves'
  else:
    front, source = pareto_frontier(params, tokens, loss, flops), 'final points (Pareto frontier)'
  if len(front['flops']) < 2 or len(np.unique(front['params'])) < 2:
    raise ValueError('approach 1 needs an envelope with at least two model sizes')
  return {**_allocation_laws(front['flops'], front['params'], front['tokens']),
          'source': source, 'frontier': {k: v.tolist() for k, v in front.items()}}


# --- approach 2 ---

def group_budgets(flops, relative_tolerance: float = 0.1) -> np.ndarray:
  """Labels 0, 1, ... grouping FLOP counts within `relative_tolerance` of their neighbour."""
  order = np.argsort(flops)
  labels = np.empty(len(flops), int)
  label = 0
  for rank, i in enumerate(order):
    if rank and flops[i] > flops[order[rank - 1]] * (1 + relative_tolerance):
      label += 1
    labels[i] = label
  return labels


def isoflop_vertex(params, tokens, loss, flops) -> dict | None:
  """The parabola in log N through one IsoFLOP curve and its minimum (None: no minimum)."""
  log_n = np.log(params)
  if len(np.unique(log_n)) < 3:
    return None
  coeffs = np.polyfit(log_n, loss, 2)
  if coeffs[0] <= 0:
    return None
  log_n_opt = -coeffs[1] / (2 * coeffs[0])
  budget = float(np.exp(np.mean(np.log(flops))))
  order = np.argsort(log_n)
  flops_per_nd = np.interp(log_n_opt, log_n[order], (flops / (params * tokens))[order])
  n_opt = float(np.exp(log_n_opt))
  return {'flops': budget, 'params': n_opt, 'tokens': budget / (flops_per_nd * n_opt),
          'loss': float(np.polyval(coeffs, log_n_opt)), 'parabola': coeffs.tolist(),
          'inside': bool(log_n.min() <= log_n_opt <= log_n.max())}


def approach2(params, tokens, loss, flops, budgets=None) -> dict:
  """Parabola vertices of every IsoFLOP curve with a minimum, then the power laws."""
  budgets = group_budgets(flops) if budgets is None else budgets
  vertices = []
  for label in np.unique(budgets):
    pick = budgets == label
    vertex = isoflop_vertex(params[pick], tokens[pick], loss[pick], flops[pick])
    if vertex is not None:
      vertices.append(vertex)
  if len(vertices) < 2:
    raise ValueError('approach 2 needs at least two IsoFLOP curves with 3+ sizes and a minimum')
  laws = _allocation_laws(*(np.array([v[k] for v in vertices]) for k in ('flops', 'params', 'tokens')))
  return {**laws, 'vertices': vertices}


# --- approach 3 ---

def law_loss(params, tokens, E, A, B, alpha, beta):
  """L(N, D) = E + A / N^alpha + B / D^beta."""
  return E + A / np.power(params, alpha) + B / np.power(tokens, beta)


def _huber(residual, delta):
  return np.where(np.abs(residual) <= delta, 0.5 * residual ** 2,
                  delta * (np.abs(residual) - 0.5 * delta))


def _objective(theta, log_n, log_d, log_loss, delta):
  """Sum of Huber(LSE(a - alpha log N, b - beta log D, e) - log L) and its gradient."""
  a, b, e, alpha, beta = theta
  t_n, t_d = a - alpha * log_n, b - beta * log_d
  top = np.maximum(np.maximum(t_n, t_d), e)
  w_n, w_d, w_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
  total = w_n + w_d + w_e
  residual = top + np.log(total) - log_loss
  dr = np.clip(residual, -delta, delta) / total  # d huber / d residual, over the softmax sum
  g_n, g_d = w_n * dr, w_d * dr
  grad = np.array([g_n.sum(), g_d.sum(), (w_e * dr).sum(), -(g_n * log_n).sum(),
                   -(g_d * log_d).sum()])
  return _huber(residual, delta).sum(), grad


def objective_at(starts, log_n, log_d, log_loss, delta):
  """The objective at many (a, b, e, alpha, beta) at once (rows of `starts`)."""
  a, b, e, alpha, beta = (starts[:, i:i + 1] for i in range(5))
  terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))
  residual = special.logsumexp(terms, axis=0) - log_loss
  return _huber(residual, delta).sum(axis=1)


def _minimise(start, args):
  result = optimize.minimize(_objective, start, args=args, jac=True, method='L-BFGS-B',
                             options={'ftol': 1e-15, 'gtol': 1e-12, 'maxiter': 3000})
  return result.fun, result.x


def law_from_theta(theta, objective=None) -> dict:
  a, b, e, alpha, beta = (float(x) for x in theta)
  law = {'E': np.exp(e), 'A': np.exp(a), 'B': np.exp(b), 'alpha': alpha, 'beta': beta}
  law['a'] = beta / (alpha + beta)
  law['b'] = alpha / (alpha + beta)
  law['G'] = (alpha * law['A'] / (beta * law['B'])) ** (1 / (alpha + beta))
  law = {k: float(v) for k, v in law.items()}
  law['theta'] = [a, b, e, alpha, beta]
  if objective is not None:
    law['objective'] = float(objective)
  return law


def grid_starts(grid: dict = PAPER_GRID) -> np.ndarray:
  """Every (a, b, e, alpha, beta) of a grid given per parameter."""
  return np.array(list(itertools.product(grid['a'], grid['b'], grid['e'], grid['alpha'],
                                         grid['beta'])), float)


def approach3(params, tokens, loss, starts=None, lbfgs_starts: int = 20,
              delta: float = HUBER_DELTA) -> dict:
  """L-BFGS from the `lbfgs_starts` best of `starts` (default: the paper's grid; 0: from all of
  them); the lowest Huber objective wins."""
  starts = grid_starts() if starts is None else np.atleast_2d(np.asarray(starts, float))
  args = (np.log(params), np.log(tokens), np.log(loss), delta)
  if lbfgs_starts and len(starts) > lbfgs_starts:
    starts = starts[np.argsort(objective_at(starts, *args))[:lbfgs_starts]]
  best_value, best_theta = np.inf, None
  for start in starts:
    value, theta = _minimise(start, args)
    if np.isfinite(value) and value < best_value and theta[3] > 0 and theta[4] > 0:
      best_value, best_theta = value, theta
  if best_theta is None:
    raise ValueError('approach 3 found no fit with positive alpha and beta')
  return law_from_theta(best_theta, best_value)


def law_optimum(law: dict, flops):
  """Approach 3's compute-optimal (N, D) for C = 6 N D."""
  n_opt = law['G'] * np.power(np.asarray(flops) / 6, law['a'])
  d_opt = np.power(np.asarray(flops) / 6, law['b']) / law['G']
  return n_opt, d_opt
