"""Where metrics go: `metrics.jsonl` (one JSON object per line) and TensorBoard event files.

Only process 0 writes (`enabled=False` elsewhere). Each record has a `kind` ('train', 'eval',
'summary') and a `step`; `read_metrics` loads them back for plots and summaries.

On resume from a checkpoint at step S (`resume_step=S`), records with a step after S come from
steps that will be computed again: they are dropped from `metrics.jsonl` (rewritten atomically)
and TensorBoard is told to hide its events from step S + 1 on (`purge_step`), so every step
appears once, with the values of the run that continues.
"""

import json
import math
import pathlib

from tensorboardX import SummaryWriter

from train.run_dir import write_atomically


def _plain(value):
  """JSON-safe Python scalars (NaN/inf become strings rather than invalid JSON)."""
  if hasattr(value, 'item'):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricsWriter:
  def __init__(self, run_dir: pathlib.Path, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    if enabled:
      purge_step = None
      if resume_step is not None and (run_dir / 'metrics.jsonl').exists():
        drop_records_after(run_dir, resume_step)
        purge_step = resume_step + 1
      self._jsonl = open(run_dir / 'metrics.jsonl', 'a', buffering=1)
      self._tb = SummaryWriter(str(run_dir / 'tb'), purge_step=purge_step)

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


def _parse_lines(text: str) -> list[dict]:
  """The records of a metrics.jsonl text; a line cut short by a killed process is skipped."""
  records = []
  for line in text.splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def read_metrics(run_dir: pathlib.Path, kind: str | None = None) -> list[dict]:
  """The records of `metrics.jsonl`, optionally of one kind only."""
  path = pathlib.Path(run_dir) / 'metrics.jsonl'
  if not path.exists():
    return []
  records = _parse_lines(path.read_text())
  return [r for r in records if kind is None or r.get('kind') == kind]


def drop_records_after(run_dir: pathlib.Path, step: int) -> None:
  """Rewrites metrics.jsonl atomically without the records of steps after `step`."""
  path = pathlib.Path(run_dir) / 'metrics.jsonl'
  kept = [r for r in _parse_lines(path.read_text()) if r.get('step', 0) <= step]
  write_atomically(path, ''.join(json.dumps(r) + '\n' for r in kept))
