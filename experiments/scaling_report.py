"""scaling_fit.json and scaling_report.md from the fits, and predictions for a compute budget.

Predictions per approach: approaches 1 and 2 give N_opt = k_n C^a and D_opt = k_d C^b; approach 3
gives N_opt = G (C/6)^a, D_opt = (C/6)^b / G (C = 6 N D, the paper's closed form). The predicted
loss is approach 3's L(N, D) at each approach's allocation (approaches 1 and 2 fit no loss).
"""

import json
import math

from experiments.scaling_fits import law_loss, law_optimum

# Hoffmann et al. 2022, Table 2 (a, b) and equation 10 (approach 3's law).
PUBLISHED = {
    'approach1': {'a': 0.50, 'b': 0.50},
    'approach2': {'a': 0.49, 'b': 0.51},
    'approach3': {'a': 0.46, 'b': 0.54, 'alpha': 0.34, 'beta': 0.28, 'E': 1.69, 'A': 406.4,
                  'B': 410.7},
}
APPROACHES = ('approach1', 'approach2', 'approach3')
TITLES = {'approach1': 'Approach 1 (envelope of loss curves)',
          'approach2': 'Approach 2 (IsoFLOP parabolas)',
          'approach3': 'Approach 3 (parametric L(N, D), Huber on log loss)'}


def predict(fit: dict, flops: float) -> dict:
  """{approach: {params, tokens, tokens_per_param, loss}} for one compute budget."""
  law = fit.get('approach3', {})
  out = {}
  for name in APPROACHES:
    approach = fit.get(name, {})
    if 'error' in approach or not approach:
      continue
    if name == 'approach3':
      n_opt, d_opt = (float(x) for x in law_optimum(approach, flops))
    else:
      n_opt = approach['k_n'] * flops ** approach['a']
      d_opt = approach['k_d'] * flops ** approach['b']
    loss = (float(law_loss(n_opt, d_opt, law['E'], law['A'], law['B'], law['alpha'], law['beta']))
            if 'E' in law else math.nan)
    out[name] = {'params': n_opt, 'tokens': d_opt, 'tokens_per_param': d_opt / n_opt, 'loss': loss}
  return out


def budgets_of(fit: dict) -> list[float]:
  vertices = fit.get('approach2', {}).get('vertices', [])
  return [v['flops'] for v in vertices]


def fit_document(fit: dict, convention: str, source: str) -> dict:
  """What scaling_fit.json holds: the fits (with intervals and draws), the FLOPs convention, the
  published values and the allocation at each budget of the data."""
  return {'flops_convention': convention, 'source': source, **fit, 'published': PUBLISHED,
          'budgets': [{'flops': c, **predict(fit, c)} for c in budgets_of(fit)]}


def _value(approach: dict, key: str) -> str:
  value = approach[key]
  low, high = approach.get('intervals', {}).get(key, (math.nan, math.nan))
  return f'{value:.4g} [{low:.4g}, {high:.4g}]'


def format_report(doc: dict) -> str:
  conf = round(100 * doc['confidence'])
  lines = ['# Scaling-law fit', '',
           f"{doc['points']} points from {doc['source']}; training FLOPs by "
           f"{doc['flops_convention']}. Intervals: {conf}% percentile bootstrap, "
           f"{doc['samples']} resamples (seed {doc['seed']}).", '']
  for name in APPROACHES:
    approach = doc.get(name, {})
    lines += [f'## {TITLES[name]}', '']
    if 'error' in approach:
      lines += [f"not fitted: {approach['error']}", '']
      continue
    keys = (('a', 'b', 'k_n', 'k_d') if name != 'approach3'
            else ('a', 'b', 'alpha', 'beta', 'E', 'A', 'B', 'G'))
    lines += [f'| | fitted [{conf}% interval] | Chinchilla (published) |', '|---|---|---|']
    for key in keys:
      published = PUBLISHED[name].get(key)
      lines.append(f"| {key} | {_value(approach, key)} | "
                   f"{'' if published is None else f'{published:g}'} |")
    boot = approach['bootstrap']
    note = f"{boot['samples']} resamples fitted, {boot['failed']} failed"
    if name == 'approach1':
      note += f"; envelope from {approach['source']}"
    if name == 'approach3':
      note += f"; Huber objective {approach['objective']:.3g}"
    lines += ['', note + '.', '']
  if doc['budgets']:
    lines += ['## Compute-optimal allocation at the budgets of the data', '',
              '| budget (FLOPs) | approach | N_opt | D_opt | tokens/param | predicted loss |',
              '|---|---|---|---|---|---|']
    for row in doc['budgets']:
      for name in APPROACHES:
        if name in row:
          r = row[name]
          lines.append(f"| {row['flops']:.3g} | {name[-1]} | {r['params']:.3g} | "
                       f"{r['tokens']:.3g} | {r['tokens_per_param']:.3g} | {r['loss']:.4g} |")
    lines += ['', "Predicted loss: approach 3's L(N, D) at each approach's allocation.", '']
  if doc.get('plots'):
    lines += ['Plots: ' + ', '.join(doc['plots']) + '.', '']
  return '\n'.join(lines)


def format_prediction(doc: dict, flops: float) -> str:
  lines = [f"compute budget {flops:.3g} FLOPs ({doc.get('flops_convention', '?')}):",
           f"{'approach':<10} {'N_opt':>10} {'D_opt':>10} {'tokens/param':>12} {'loss':>8}"]
  for name, r in predict(doc, flops).items():
    lines.append(f"{name:<10} {r['params']:>10.4g} {r['tokens']:>10.4g} "
                 f"{r['tokens_per_param']:>12.3g} {r['loss']:>8.4f}")
  return '\n'.join(lines)


def write_outputs(doc: dict, out_dir) -> None:
  (out_dir / 'scaling_fit.json').write_text(json.dumps(doc, indent=1) + '\n')
  (out_dir / 'scaling_report.md').write_text(format_report(doc))
