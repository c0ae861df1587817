"""Learning-rate transfer, read off a width x parameterization x learning-rate sweep.

    python -m experiments.mup_transfer_plot runs/sweeps/mup_transfer [MORE_DIRS] [--out FILE.png]

Reads every finished trial of the sweep (each trial directory's config.json and the final
summary in its metrics.jsonl, so it also works while the sweep still runs), and writes one
figure, final validation loss against learning rate with a curve per width, SP and muP side by
side, and prints a Markdown table: per parameterization and width, the best learning rate, its
loss, and the loss at every learning rate. configs/sweeps/mup_transfer.py is the sweep.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {'sp': 'SP', 'mup': 'muP'}


def read_trials(sweep_dir: Path) -> list[dict]:
  """(parameterization, width, lr, validation_loss) of every trial that wrote its summary; a
  non-finite or missing loss is left out."""
  rows = []
  for trial in sorted(sweep_dir.glob('trial_*')):
    try:
      config = json.loads((trial / 'config.json').read_text())
      lines = (trial / 'metrics.jsonl').read_text().splitlines()
    except FileNotFoundError:
      continue
    summary = [json.loads(line) for line in lines if '"summary"' in line]
    if not summary or not isinstance(summary[-1].get('validation_loss'), (int, float)):
      continue
    loss = summary[-1]['validation_loss']
    if math.isfinite(loss):
      rows.append(dict(parameterization=config['model'].get('parameterization', 'sp'),
                       width=config['model']['d_model'], lr=config['optim']['lr'], loss=loss))
  return rows


def transfer_figure(rows: list[dict]):
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120, sharey=True)
  widths = sorted({r['width'] for r in rows})
  colors = plt.cm.viridis([i / max(len(widths) - 1, 1) * 0.9 for i in range(len(widths))])
  for ax, parameterization in zip(axes, ('sp', 'mup')):
    for width, color in zip(widths, colors):
      points = sorted((r['lr'], r['loss']) for r in rows
                      if r['width'] == width and r['parameterization'] == parameterization)
      if points:
        ax.plot(*zip(*points), marker='o', ms=4, color=color, label=f'd_model {width}')
        best = min(points, key=lambda p: p[1])
        ax.plot(*best, marker='*', ms=12, color=color)
    ax.set_xscale('log', base=2)
    ax.set_xlabel('learning rate (AdamW peak)')
    ax.set_title(NAMES[parameterization])
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('final validation loss (nats/token)')
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  return fig


def transfer_table(rows: list[dict]) -> str:
  lrs = sorted({r['lr'] for r in rows})
  lines = ['| param. | d_model | best lr | best loss | ' + ' | '.join(f'{lr:g}' for lr in lrs)
           + ' |', '|---|---|---|---|' + '---|' * len(lrs)]
  for parameterization in ('sp', 'mup'):
    for width in sorted({r['width'] for r in rows}):
      by_lr = {r['lr']: r['loss'] for r in rows
               if r['width'] == width and r['parameterization'] == parameterization}
      if not by_lr:
        continue
      best = min(by_lr, key=by_lr.get)
      cells = [f'{by_lr[lr]:.3f}' if lr in by_lr else '-' for lr in lrs]
      lines.append(f'| {NAMES[parameterization]} | {width} | {best:g} | {by_lr[best]:.3f} | '
                   + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.mup_transfer_plot',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('sweep_dirs', nargs='+', help='the sweep directory, e.g. '
                      'runs/sweeps/mup_transfer, and any folders of more trial_* run directories')
  parser.add_argument('--out', default=None, help='figure path (default: '
                      '<first sweep_dir>/transfer.png)')
  args = parser.parse_args(argv)
  sweep_dir = Path(args.sweep_dirs[0])
  found = {}  # one run per (parameterization, width, lr): the first directory's wins
  for directory in args.sweep_dirs:
    for row in read_trials(Path(directory)):
      found.setdefault((row['parameterization'], row['width'], row['lr']), row)
  rows = list(found.values())
  if not rows:
    print(f'error: no finished trials under {", ".join(args.sweep_dirs)}', file=sys.stderr)
    return 2
  out = Path(args.out or sweep_dir / 'transfer.png')
  figure = transfer_figure(rows)
  figure.savefig(out)
  plt.close(figure)
  print(transfer_table(rows))
  print(f'\n{len(rows)} trials; wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
