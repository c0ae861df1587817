"""`launch.py mup`: tools for the muP parameterization (models/mup.py, train/mup.py).

    python launch.py mup coord-check --config configs/tiny.py --widths 64,128,256,512,1024

`coord-check` trains the config's model at each width under SP and under muP for a few steps on
the config's corpus and writes, to --out (default <run_root>/coord_check/<name>/):
coord_check.csv (parameterization, width, step, activation, mean |value|), coord_check.png (one
panel per layer, width on a log axis, SP above muP) and slopes.md (the fitted slope of log
mean |activation| against log width at the last step: near 0 under muP, positive under SP).
"""

import argparse
import csv
import time

from errors import UserError

SUBCOMMANDS = ('coord-check',)


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(f'{self.prog}: {message}; see {self.prog} --help')


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog='launch.py mup coord-check',
      description='The muP coordinate check: mean |activation| of the embedding, every '
                  "layer's attention and MLP output and the logits, against width, over a few "
                  'training steps at a constant learning rate (the config\'s optim.lr), under '
                  'SP and under muP; a CSV, a PNG with one panel per layer, and fitted slopes.',
      epilog='Any config value can be overridden: --config.optim.lr=1e-2 '
             '--config.train.batch_size=8 --config.model.n_layers=2.')
  parser.add_argument('--config', default='configs/tiny.py',
                      help='run config whose model, optimizer and corpus are used '
                           '(default: configs/tiny.py)')
  parser.add_argument('--widths', default='64,128,256,512,1024',
                      help='comma-separated d_model values (default 64,128,256,512,1024); each '
                           'must divide by model.n_heads')
  parser.add_argument('--steps', type=int, default=5,
                      help='optimizer steps per model; activations are measured before each '
                           '(default 5)')
  parser.add_argument('--base_width', type=int, default=0,
                      help="muP's base width (default: model.mup_base_width, else the narrowest "
                           'width)')
  parser.add_argument('--out', default=None,
                      help='output folder (default: <run_root>/coord_check/<name>)')
  return parser


def parse_widths(text: str, n_heads: int) -> list[int]:
  """'64,128' -> [64, 128]; UserError for anything that is not a list of valid widths."""
  try:
    widths = sorted({int(w) for w in text.split(',') if w.strip()})
  except ValueError:
    raise UserError(f'--widths={text!r} must be comma-separated integers, e.g. 64,128,256') from None
  if len(widths) < 2:
    raise UserError(f'--widths={text!r} needs at least two different widths to fit a slope')
  bad = [w for w in widths if w <= 0 or w % n_heads]
  if bad:
    raise UserError(f'--widths: {bad[0]} is not a positive multiple of model.n_heads={n_heads}; '
                    'change the width or --config.model.n_heads')
  return widths


def write_csv(records: list[dict], path) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['parameterization', 'width', 'step', 'name', 'value'])
    writer.writeheader()
    writer.writerows(records)


def slopes_table(slopes: dict, step: int) -> str:
  """Markdown: one row per activation, the SP and muP slopes side by side."""
  names = list(dict.fromkeys(name for _, name in slopes))
  lines = [f'slope of log mean|activation| against log width, at step {step}', '',
           '| activation | SP | muP |', '|---|---|---|']
  for name in names:
    lines.append(f"| {name} | {slopes.get(('sp', name), float('nan')):+.2f} | "
                 f"{slopes.get(('mup', name), float('nan')):+.2f} |")
  return '\n'.join(lines) + '\n'


def coord_check_command(argv: list[str]) -> int:
  from etils import epath

  from train.config import load_config, split_overrides
  overrides, rest = split_overrides(argv)
  args = _parser().parse_args(rest)
  config = load_config(args.config, overrides)
  if args.steps < 1:
    raise UserError(f'--steps={args.steps} must be at least 1')
  widths = parse_widths(args.widths, config.model.n_heads)
  out = epath.Path(args.out or epath.Path(config.run_root) / 'coord_check' / config.name)
  out.mkdir(parents=True, exist_ok=True)

  from data import loader
  from experiments import mup_coord_check as cc
  from train.experiment import open_corpus
  corpus = open_corpus(config, config.model.vocab_size, progress=True)
  t = config.train
  batches = [loader.train_batch(corpus.train_tokens, config.seed, step, t.batch_size,
                                config.data.seq_len) for step in range(args.steps)]
  start = time.time()

  def done(parameterization, width):
    print(f'{parameterization:>3} width {width:>5}: done ({time.time() - start:.0f} s)', flush=True)

  records = cc.coord_check(config, widths, batches, args.base_width, on_done=done)
  write_csv(records, out / 'coord_check.csv')
  title = (f'{config.name}: {config.model.n_layers} layers, {config.optim.name} lr '
           f'{config.optim.lr:g}, batch {t.batch_size} x {config.data.seq_len}')
  figure = cc.coord_figure(records, title)
  figure.savefig(str(out / 'coord_check.png'))
  cc.plt.close(figure)
  table = slopes_table(cc.slopes(records, args.steps), args.steps)
  (out / 'slopes.md').write_text(table)
  print(table)
  print(f'wrote {out}/coord_check.csv, coord_check.png, slopes.md')
  return 0


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__.strip())
    return 0
  if argv[0] != 'coord-check':
    raise UserError(f'launch.py mup: unknown subcommand {argv[0]!r}; use one of '
                    f'{", ".join(SUBCOMMANDS)} (launch.py mup --help)')
  return coord_check_command(argv[1:])
