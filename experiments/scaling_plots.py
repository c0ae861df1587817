"""The four plots of a scaling fit, written as PNGs into the output directory.

isoflop.png       loss against N for each IsoFLOP curve, its parabola and minimum (approach 2)
allocation.png    N_opt and D_opt against C: the data each approach fitted, its power law, and
                  the band of the bootstrap draws (central interval at each C)
loss_compute.png  every point (and loss curve) against compute, with the frontier of approach 1
                  and approach 3's loss at its compute-optimal allocation
law_contours.png  approach 3's L(N, D = C / 6N) as contours over (C, N), its efficient frontier
"""

from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.scaling_fits import law_loss, law_optimum  # noqa: E402

COLORS = {'approach1': 'tab:blue', 'approach2': 'tab:orange', 'approach3': 'tab:green'}


def _ok(doc, name):
  return name in doc and 'error' not in doc[name]


def plot_isoflop(doc, points, path):
  fig, ax = plt.subplots(figsize=(6, 4.5))
  vertices = doc['approach2']['vertices'] if _ok(doc, 'approach2') else []
  budgets = points['budget_label']
  cmap = plt.get_cmap('viridis')
  labels = np.unique(budgets)
  for i, label in enumerate(labels):
    pick = budgets == label
    color = cmap(i / max(len(labels) - 1, 1))
    flops = float(np.exp(np.mean(np.log(points['flops'][pick]))))
    ax.scatter(points['params'][pick], points['loss'][pick], color=color, s=18,
               label=f'{flops:.2g} FLOPs')
    vertex = next((v for v in vertices if abs(np.log(v['flops'] / flops)) < 1e-9), None)
    if vertex:
      n = np.geomspace(points['params'][pick].min(), points['params'][pick].max(), 100)
      ax.plot(n, np.polyval(vertex['parabola'], np.log(n)), color=color, lw=1)
      ax.scatter([vertex['params']], [vertex['loss']], color=color, marker='*', s=120,
                 edgecolor='k', zorder=3)
  ax.set(xscale='log', xlabel='parameters N', ylabel='final loss',
         title='IsoFLOP curves, parabolas in log N and minima (*)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _band(draws_k, draws_e, flops, confidence):
  values = np.array(draws_k)[:, None] * flops[None, :] ** np.array(draws_e)[:, None]
  tail = 100 * (1 - confidence) / 2
  return np.percentile(values, [tail, 100 - tail], axis=0)


def plot_allocation(doc, path):
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  data = []
  for name in ('approach1', 'approach2'):
    if _ok(doc, name):
      source = doc[name]['frontier'] if name == 'approach1' else {
          k: [v[k] for v in doc[name]['vertices']] for k in ('flops', 'params', 'tokens')}
      data.append((name, {k: np.asarray(v) for k, v in source.items()}))
  all_flops = np.concatenate([d['flops'] for _, d in data]) if data else np.array([1e15, 1e20])
  flops = np.geomspace(all_flops.min() / 3, all_flops.max() * 3, 100)
  for ax, (key, k, exponent, label) in zip(axes, (('params', 'k_n', 'a', 'N_opt'),
                                                  ('tokens', 'k_d', 'b', 'D_opt'))):
    for name, source in data:
      ax.scatter(source['flops'], source[key], s=8 if name == 'approach1' else 30,
                 color=COLORS[name], alpha=0.5)
    for name in ('approach1', 'approach2', 'approach3'):
      if not _ok(doc, name):
        continue
      fit = doc[name]
      if name == 'approach3':
        n_opt, d_opt = law_optimum(fit, flops)
        line = n_opt if key == 'params' else d_opt
        draws = fit['draws']
        samples = np.array([law_optimum({'G': g, 'a': a, 'b': b}, flops)[0 if key == 'params' else 1]
                            for g, a, b in zip(draws['G'], draws['a'], draws['b'])])
        tail = 100 * (1 - doc['confidence']) / 2
        band = np.percentile(samples, [tail, 100 - tail], axis=0) if len(samples) else None
      else:
        line = fit[k] * flops ** fit[exponent]
        band = (_band(fit['draws'][k], fit['draws'][exponent], flops, doc['confidence'])
                if fit['draws'][k] else None)
      ax.plot(flops, line, color=COLORS[name], label=f"{name}: {exponent} = {fit[exponent]:.3f}")
      if band is not None:
        ax.fill_between(flops, band[0], band[1], color=COLORS[name], alpha=0.15)
    ax.set(xscale='log', yscale='log', xlabel='compute C (FLOPs)', ylabel=label)
    ax.legend(fontsize=7)
  fig.suptitle('compute-optimal allocation (bands: bootstrap interval)')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_loss_compute(doc, points, curves, path):
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for curve in curves or []:
    ax.plot(curve['flops'], curve['loss'], color='0.75', lw=0.7)
  ax.scatter(points['flops'], points['loss'], s=14, color='k', label='final losses')
  if _ok(doc, 'approach1'):
    front = doc['approach1']['frontier']
    ax.plot(front['flops'], front['loss'], color=COLORS['approach1'], lw=2,
            label=f"frontier ({doc['approach1']['source']})")
  if _ok(doc, 'approach3'):
    law = doc['approach3']
    flops = np.geomspace(points['flops'].min(), points['flops'].max(), 100)
    n_opt, d_opt = law_optimum(law, flops)
    ax.plot(flops, law_loss(n_opt, d_opt, law['E'], law['A'], law['B'], law['alpha'],
                            law['beta']), color=COLORS['approach3'], ls='--',
            label='approach 3 at its optimum')
  ax.set(xscale='log', xlabel='compute C (FLOPs)', ylabel='loss', title='loss against compute')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_law_contours(doc, points, path):
  law = doc['approach3']
  fig, ax = plt.subplots(figsize=(6, 4.5))
  flops = np.geomspace(points['flops'].min() / 10, points['flops'].max() * 10, 200)
  params = np.geomspace(points['params'].min() / 10, points['params'].max() * 10, 200)
  c_grid, n_grid = np.meshgrid(flops, params)
  loss = law_loss(n_grid, c_grid / (6 * n_grid), law['E'], law['A'], law['B'], law['alpha'],
                  law['beta'])
  levels = np.quantile(loss, np.linspace(0.02, 0.9, 14))
  contour = ax.contour(c_grid, n_grid, loss, levels=np.unique(levels), cmap='viridis',
                       linewidths=0.8)
  ax.clabel(contour, fontsize=6, fmt='%.2f')
  ax.plot(flops, law_optimum(law, flops)[0], color='tab:red', label='efficient frontier')
  ax.scatter(points['flops'], points['params'], s=10, color='k', label='points')
  ax.set(xscale='log', yscale='log', xlabel='compute C = 6 N D (FLOPs)', ylabel='parameters N',
         title='approach 3: contours of L(N, D)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_plots(doc: dict, points: dict, curves, out_dir: Path) -> list[str]:
  """Every plot the fits allow; returns the file names written."""
  written = []
  if _ok(doc, 'approach2'):
    plot_isoflop(doc, points, out_dir / 'isoflop.png')
    written.append('isoflop.png')
  if _ok(doc, 'approach1') or _ok(doc, 'approach2') or _ok(doc, 'approach3'):
    plot_allocation(doc, out_dir / 'allocation.png')
    written.append('allocation.png')
  plot_loss_compute(doc, points, curves, out_dir / 'loss_compute.png')
  written.append('loss_compute.png')
  if _ok(doc, 'approach3'):
    plot_law_contours(doc, points, out_dir / 'law_contours.png')
    written.append('law_contours.png')
  return written
