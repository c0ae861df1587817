"""metrics.jsonl stays strict JSON when a step is not finite, and loss.png keeps numeric axes.

A real tiny run skips one update (its batch holds out-of-vocabulary ids, as in
tests/test_faults.py): that step's loss is NaN, which must be written as null (not the string
'nan', which matplotlib would turn into a categorical y-axis), read back as NaN, and drawn as a
gap with a marker.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import category

import launch
from tests.test_faults import poison_steps
from tests.tiny_run import ROOT, tiny_flags, write_corpus
from train.metrics import read_metrics, record_line
from train.plots import loss_figure


def _strict_records(path) -> list[dict]:
  def refuse(constant):
    raise ValueError(f'{constant} is not JSON')
  return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_record_line_is_strict_json():
  line = record_line({'kind': 'train', 'step': 3, 'loss': math.nan, 'grad_norm': math.inf,
                      'lr': np.float32(0.5), 'finite': np.bool_(False)})
  assert json.loads(line) == {'kind': 'train', 'step': 3, 'loss': None, 'grad_norm': None,
                              'lr': 0.5, 'finite': False}


@pytest.mark.slow
def test_a_skipped_step_is_null_in_metrics_and_a_gap_in_the_plot(tmp_path, monkeypatch):
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  poison_steps(monkeypatch, {3})  # the update of step 4 is skipped
  assert launch.main(['train'] + tiny_flags(tmp_path, run_dir, train__steps=8,
                                            train__eval_every=4)) == 0

  records = _strict_records(run_dir / 'metrics.jsonl')  # NaN/Infinity would be refused
  for record in records:
    json.dumps(record, allow_nan=False)
    assert all(value is None or isinstance(value, (bool, int, float))
               for name, value in record.items() if name not in ('kind', 'mfu_of')), record
  train = {r['step']: r for r in records if r['kind'] == 'train'}
  assert train[4]['finite'] is False and train[4]['loss'] is None
  assert train[3]['finite'] is True and isinstance(train[3]['loss'], float)
  assert math.isnan(read_metrics(run_dir, 'train')[3]['loss'])  # step 4, read back as NaN
  assert (run_dir / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

  fig = loss_figure(run_dir)
  ax = fig.axes[0]
  assert not isinstance(ax.yaxis.get_converter(), category.StrCategoryConverter)
  train_line = next(line for line in ax.lines if line.get_label() == 'train')
  losses = np.asarray(train_line.get_ydata())
  assert losses.dtype == np.float64 and np.isnan(losses[3])
  assert np.isfinite(np.delete(losses, 3)).all()
  marker = next(line for line in ax.lines if line.get_label() == 'non-finite loss')
  assert list(marker.get_xdata()) == [4]
  low, high = ax.get_ylim()
  assert 0 < low < np.nanmin(losses) and np.nanmax(losses) < high < 10


def test_tensorboard_files_are_written_without_importing_pytorch(tmp_path):
  """tensorboardX would import an installed torch (1.3-1.6 s of every run's start); the writer
  hides it for that import, writes its event file, and torch still imports afterwards."""
  pytest.importorskip('torch')
  code = ('import sys, pathlib\n'
          'from train.metrics import MetricsWriter\n'
          f'writer = MetricsWriter(pathlib.Path({str(tmp_path)!r}))\n'
          "writer.write('train', 1, {'loss': 1.5})\n"
          'writer.flush()\n'
          "assert 'torch' not in sys.modules, 'tensorboardX imported torch'\n"
          'import torch\n')
  subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True, timeout=120)
  assert list((tmp_path / 'tb').glob('events.out.tfevents.*'))
