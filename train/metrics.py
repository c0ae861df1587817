"""Where metrics go: `metrics.jsonl` (one JSON object per line) and TensorBoard event files.

Only process 0 writes (`enabled=False` elsewhere). Each record has a `kind` ('train', 'eval',
'checkpoint', 'summary') and a `step`; `read_metrics` loads them back for plots and summaries.
Every line is strict JSON (`json.dumps(..., allow_nan=False)` holds): a value that is not finite
(NaN, +-inf, e.g. the loss of a skipped step) is written as `null`, and `read_metrics` gives it
back as NaN. TensorBoard gets only the finite values.

The run directory may be in a bucket (gs://, see storage.py). Locally `metrics.jsonl` is
appended to line by line; a bucket cannot append, so there the records are kept in memory and
the whole file is uploaded again at most every `REMOTE_FLUSH_S` seconds, with every record
that is not a 'train' record (so at every checkpoint and evaluation) and at the end.
TensorBoard files go through tensorboardX, which writes gs:// itself (google-cloud-storage).

On resume from a checkpoint at step S (`resume_step=S`), records with a step after S come from
steps that will be computed again: they are dropped from `metrics.jsonl` (rewritten atomically)
and TensorBoard is told to hide its events from step S + 1 on (`purge_step`), so every step
appears once, with the values of the run that continues.
"""

import json
import math
import sys
import time

from storage import as_path, is_remote, write_atomically

METRICS_FILE = 'metrics.jsonl'
REMOTE_FLUSH_S = 30.0


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch: tensorboardX imports torch when it
  is installed (only to accept torch tensors, which we never log), 1.3-1.6 s of every run's
  start on a machine that has it; torch is hidden from that one import."""
  hidden = 'torch' not in sys.modules
  if hidden:
    sys.modules['torch'] = None  # `import torch` raises ImportError while this is set
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if hidden:
      del sys.modules['torch']
  return SummaryWriter


def _plain(value):
  """JSON-safe Python scalars: numpy/jax scalars unwrapped, non-finite floats as None."""
  if hasattr(value, 'item'):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def record_line(record: dict) -> str:
  """One strict-JSON line (with its newline) for a record; non-finite numbers become null."""
  return json.dumps({k: _plain(v) for k, v in record.items()}, allow_nan=False) + '\n'


class MetricsWriter:
  def __init__(self, run_dir, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    if enabled:
      run_dir = as_path(run_dir)
      self._path = run_dir / METRICS_FILE
      self._remote = is_remote(run_dir)
      purge_step = None
      if resume_step is not None and self._path.exists():
        drop_records_after(run_dir, resume_step)
        purge_step = resume_step + 1
      if self._remote:
        self._lines = [record_line(r) for r in read_metrics(run_dir)]
        self._flushed_at = time.monotonic()
      else:
        self._jsonl = open(self._path, 'a', buffering=1)
      self._tb = _summary_writer_class()(str(run_dir / 'tb'), purge_step=purge_step)

  def write(self, kind: str, step: int, values: dict) -> None:
    if not self.enabled:
      return
    record = {'kind': kind, 'step': int(step), **{k: _plain(v) for k, v in values.items()}}
    line = record_line(record)
    if self._remote:
      self._lines.append(line)
      if kind != 'train' or time.monotonic() - self._flushed_at >= REMOTE_FLUSH_S:
        self.flush()
    else:
      self._jsonl.write(line)
    for name, value in record.items():
      if name not in ('kind', 'step') and isinstance(value, (int, float)) and not isinstance(value, bool):
        self._tb.add_scalar(f'{kind}/{name}', value, int(step))

  def flush(self) -> None:
    """Makes every record written so far visible in the run directory (and TensorBoard's)."""
    if not self.enabled:
      return
    if self._remote:
      write_atomically(self._path, ''.join(self._lines))
      self._flushed_at = time.monotonic()
    else:
      self._jsonl.flush()
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.flush()
      if not self._remote:
        self._jsonl.close()
      self._tb.close()


def _parse_lines(text: str) -> list[dict]:
  """The records of a metrics.jsonl text; a line cut short by a killed process is skipped.
  null values (non-finite when written) come back as NaN."""
  records = []
  for line in text.splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    records.append({k: math.nan if v is None else v for k, v in record.items()})
  return records


def read_metrics(run_dir, kind: str | None = None) -> list[dict]:
  """The records of `metrics.jsonl`, optionally of one kind only."""
  path = as_path(run_dir) / METRICS_FILE
  if not path.exists():
    return []
  records = _parse_lines(path.read_text())
  return [r for r in records if kind is None or r.get('kind') == kind]


def drop_records_after(run_dir, step: int) -> None:
  """Rewrites metrics.jsonl atomically without the records of steps after `step`."""
  path = as_path(run_dir) / METRICS_FILE
  kept = [r for r in _parse_lines(path.read_text()) if r.get('step', 0) <= step]
  write_atomically(path, ''.join(record_line(r) for r in kept))
