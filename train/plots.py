"""Pictures of a run: `loss.png` with train and validation loss against step.

A non-finite loss (a skipped update, logged as null in metrics.jsonl and read back as NaN)
leaves a gap in its curve and is marked by a red cross at the bottom of the axes.
"""

import io
import math

from storage import as_path
from train.metrics import read_metrics


def _pyplot():
  """matplotlib's pyplot on the file-only Agg backend, imported when a picture is drawn (not
  at the start of every run: it takes about 0.45 s)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _finite_number(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def loss_figure(run_dir, baseline_nats: float | None = None):
  """The matplotlib figure of loss.png (numeric axes; NaN losses as gaps and markers)."""
  run_dir = as_path(run_dir)
  train = read_metrics(run_dir, 'train')
  evals = read_metrics(run_dir, 'eval')
  fig, ax = _pyplot().subplots(figsize=(7, 4.2), dpi=120)
  if train:
    ax.plot([r['step'] for r in train], [float(r['loss']) for r in train], label='train', lw=1.2)
  if evals:
    ax.plot([r['step'] for r in evals], [float(r['loss']) for r in evals], 'o-',
            label='validation', lw=1.5)
  bad_steps = [r['step'] for r in train + evals if not _finite_number(r['loss'])]
  if bad_steps:
    ax.plot(bad_steps, [0.02] * len(bad_steps), 'x', color='red', ms=6,
            transform=ax.get_xaxis_transform(), label='non-finite loss')
  if baseline_nats is not None:
    ax.axhline(baseline_nats, color='gray', ls='--', lw=1, label='unigram baseline')
  ax.set_xlabel('step')
  ax.set_ylabel('loss (nats/token)')
  ax.set_title(run_dir.name)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  return fig


def plot_losses(run_dir, baseline_nats: float | None = None):
  """Writes run_dir/loss.png from metrics.jsonl (local or gs://) and returns its path."""
  fig = loss_figure(run_dir, baseline_nats)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  _pyplot().close(fig)
  path = as_path(run_dir) / 'loss.png'
  path.write_bytes(buffer.getvalue())
  return path
