"""Where metrics go: `metrics.jsonl` (one JSON object per line) and TensorBoard event files.

Only process 0 writes (`enabled=False` elsewhere). Each record has a `kind` ('train', 'eval',
'summary') and a `step`; `read_metrics` loads them back for plots and summaries.
"""

import json
import math
import pathlib

from tensorboardX import SummaryWriter


def _plain(value):
  """JSON-safe Python scalars (NaN/inf become strings rather than invalid JSON)."""
  if hasattr(value, 'item'):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricsWriter:
  def __init__(self, run_dir: pathlib.Path, enabled: bool = True):
    self.enabled = enabled
    if enabled:
      self._jsonl = open(run_dir / 'metrics.jsonl', 'a', buffering=1)
      self._tb = SummaryWriter(str(run_dir / 'tb'))

  def write(self, kind: str, step: int, values: dict) -> None:
    if not self.enabled:
      return
    record = {'kind': kind, 'step': int(step), **{k: _plain(v) for k, v in values.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
    for name, value in record.items():
      if name not in ('kind', 'step') and isinstance(value, (int, float)) and not isinstance(value, bool):
        self._tb.add_scalar(f'{kind}/{name}', value, int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def read_metrics(run_dir: pathlib.Path, kind: str | None = None) -> list[dict]:
  """The records of `metrics.jsonl`, optionally of one kind only."""
  path = pathlib.Path(run_dir) / 'metrics.jsonl'
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if kind is None or r.get('kind') == kind]
