"""Pictures of a run: `loss.png` with train and validation loss against step."""

import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from train.metrics import read_metrics  # noqa: E402


def plot_losses(run_dir: pathlib.Path, baseline_nats: float | None = None) -> pathlib.Path:
  """Writes run_dir/loss.png from metrics.jsonl and returns its path."""
  train = read_metrics(run_dir, 'train')
  evals = read_metrics(run_dir, 'eval')
  fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
  if train:
    ax.plot([r['step'] for r in train], [r['loss'] for r in train], label='train', lw=1.2)
  if evals:
    ax.plot([r['step'] for r in evals], [r['loss'] for r in evals], 'o-', label='validation', lw=1.5)
  if baseline_nats is not None:
    ax.axhline(baseline_nats, color='gray', ls='--', lw=1, label='unigram baseline')
  ax.set_xlabel('step')
  ax.set_ylabel('loss (nats/token)')
  ax.set_title(pathlib.Path(run_dir).name)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  path = pathlib.Path(run_dir) / 'loss.png'
  fig.savefig(path)
  plt.close(fig)
  return path
