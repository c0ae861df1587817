"""Points and loss curves drawn from a known law L(N, D), to test the fitters and demonstrate them.

`CHINCHILLA_LAW` is the paper's approach 3 fit (Hoffmann et al. 2022, equation 10). Noise is
multiplicative: loss x exp(noise * standard normal), from a seeded generator. The demonstration
CSV in docs/scaling_demo/ was written by

    python -m experiments.scaling_synthetic --out docs/scaling_demo/chinchilla_law_points.csv
"""

import argparse

import numpy as np

from experiments.scaling_fits import law_loss, law_optimum

CHINCHILLA_LAW = {'E': 1.69, 'A': 406.4, 'B': 410.7, 'alpha': 0.34, 'beta': 0.28}


def derived_law(law: dict) -> dict:
  """The law with a, b and G filled in (as approach 3 reports them)."""
  alpha, beta = law['alpha'], law['beta']
  g = (alpha * law['A'] / (beta * law['B'])) ** (1 / (alpha + beta))
  return {**law, 'a': beta / (alpha + beta), 'b': alpha / (alpha + beta), 'G': g}


def isoflop_points(law: dict, budgets, sizes_per_budget: int = 7, span: float = 4.0,
                   noise: float = 0.0, seed: int = 0) -> dict:
  """For each budget C, sizes from N_opt/span to N_opt*span (log-spaced), D = C / 6N."""
  rng = np.random.default_rng(seed)
  law = derived_law(law)
  rows = []
  for label, flops in enumerate(budgets):
    n_opt, _ = law_optimum(law, flops)
    for params in n_opt * np.geomspace(1 / span, span, sizes_per_budget):
      tokens = flops / (6 * params)
      loss = law_loss(params, tokens, law['E'], law['A'], law['B'], law['alpha'], law['beta'])
      rows.append((params, tokens, loss * np.exp(noise * rng.standard_normal()), flops, label))
  columns = zip(*rows)
  return {k: np.array(v) for k, v in zip(('params', 'tokens', 'loss', 'flops', 'budget'), columns)}


def loss_curves(law: dict, sizes, max_flops: float, points_per_curve: int = 40,
                noise: float = 0.0, seed: int = 0) -> list[dict]:
  """One curve per size, trained to `max_flops`: the law at log-spaced token counts along it
  (each point as if its own cosine schedule ended there, the paper's idealisation)."""
  rng = np.random.default_rng(seed)
  curves = []
  for params in sizes:
    tokens = np.geomspace(max_flops / (6 * params) / 1e3, max_flops / (6 * params),
                          points_per_curve)
    loss = law_loss(params, tokens, law['E'], law['A'], law['B'], law['alpha'], law['beta'])
    loss = loss * np.exp(noise * rng.standard_normal(len(tokens)))
    curves.append({'params': float(params), 'tokens': tokens, 'flops': 6 * params * tokens,
                   'loss': loss})
  return curves


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Write IsoFLOP points drawn from Chinchilla\'s '
                                   'law (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28) as CSV.')
  parser.add_argument('--out', required=True, help='CSV to write')
  parser.add_argument('--budgets', type=float, nargs='+', default=[1e18, 1e19, 1e20, 1e21, 1e22])
  parser.add_argument('--sizes', type=int, default=7, help='sizes per budget (default 7)')
  parser.add_argument('--noise', type=float, default=0.01, help='relative loss noise (0.01)')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  from experiments.scaling_points import write_points_csv
  write_points_csv(isoflop_points(CHINCHILLA_LAW, args.budgets, args.sizes, noise=args.noise,
                                  seed=args.seed), args.out)


if __name__ == '__main__':
  main()
