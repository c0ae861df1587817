"""All three approaches on one points table, each fitted number with a bootstrap interval.

Resampling, with replacement, `samples` times from a seeded generator: approach 1 resamples the
loss curves (or, without curves, the points); approach 2 resamples the points within each IsoFLOP
curve (so every budget keeps its size); approach 3 resamples the points, and each resample's
L-BFGS starts from the full fit's optimum and from the best start of the grid. An interval is the
central `confidence` share of the resampled values (percentile bootstrap); resamples where a fit
fails (e.g. a parabola without a minimum) are counted in `failed` and left out.
"""

import numpy as np

from experiments import scaling_fits as fits

ALLOCATION_KEYS = ('a', 'b', 'k_n', 'k_d')
LAW_KEYS = ('E', 'A', 'B', 'alpha', 'beta', 'a', 'b', 'G')


def _interval(values, confidence):
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(values, [tail, 100 - tail])
  return float(low), float(high)


def _with_intervals(fit: dict, samples: list[dict], keys, confidence, failed: int) -> dict:
  out = dict(fit)
  out['intervals'] = {k: _interval([s[k] for s in samples], confidence) for k in keys} \
      if samples else {}
  out['bootstrap'] = {'samples': len(samples), 'failed': failed}
  out['draws'] = {k: [float(s[k]) for s in samples] for k in keys}  # for the plots' bands
  return out


def _resample(fit_fn, draw, count):
  results, failed = [], 0
  for _ in range(count):
    try:
      results.append(fit_fn(*draw()))
    except ValueError:
      failed += 1
  return results, failed


def fit_all(points: dict, curves: list[dict] | None = None, samples: int = 100,
            confidence: float = 0.95, seed: int = 0, lbfgs_starts: int = 20,
            grid: dict | None = None) -> dict:
  """Fits of approaches 1, 2 and 3 with intervals; `points` holds arrays params, tokens, loss,
  flops and optionally budget (IsoFLOP curve labels). A failing approach reports its error."""
  rng = np.random.default_rng(seed)
  n, d, loss, flops = (np.asarray(points[k], float) for k in ('params', 'tokens', 'loss', 'flops'))
  budgets = np.asarray(points['budget']) if 'budget' in points else fits.group_budgets(flops)
  result = {'points': int(len(n)), 'samples': samples, 'confidence': confidence, 'seed': seed}

  def attempt(name, run):
    try:
      result[name] = run()
    except ValueError as e:
      result[name] = {'error': str(e)}

  def approach1():
    fit = fits.approach1(curves, n, d, loss, flops)
    if curves:
      draw = lambda: ([curves[i] for i in rng.integers(0, len(curves), len(curves))],)
    else:
      def draw():
        pick = rng.integers(0, len(n), len(n))
        return None, n[pick], d[pick], loss[pick], flops[pick]
    boot, failed = _resample(fits.approach1, draw, samples)
    return _with_intervals(fit, boot, ALLOCATION_KEYS, confidence, failed)

  def approach2():
    fit = fits.approach2(n, d, loss, flops, budgets)
    groups = [np.flatnonzero(budgets == label) for label in np.unique(budgets)]
    def draw():
      pick = np.concatenate([rng.choice(g, len(g)) for g in groups])
      return n[pick], d[pick], loss[pick], flops[pick], budgets[pick]
    boot, failed = _resample(fits.approach2, draw, samples)
    return _with_intervals(fit, boot, ALLOCATION_KEYS, confidence, failed)

  def approach3():
    starts = fits.grid_starts(grid) if grid else None
    fit = fits.approach3(n, d, loss, starts=starts, lbfgs_starts=lbfgs_starts)
    restarts = [fit['theta']]
    all_starts = fits.grid_starts(grid or fits.PAPER_GRID)
    args = (np.log(n), np.log(d), np.log(loss), fits.HUBER_DELTA)
    restarts.append(all_starts[np.argmin(fits.objective_at(all_starts, *args))])
    def draw():
      pick = rng.integers(0, len(n), len(n))
      return n[pick], d[pick], loss[pick], restarts, 0
    boot, failed = _resample(fits.approach3, draw, samples)
    return _with_intervals(fit, boot, LAW_KEYS, confidence, failed)

  attempt('approach1', approach1)
  attempt('approach2', approach2)
  attempt('approach3', approach3)
  return result
