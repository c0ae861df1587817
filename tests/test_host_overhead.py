"""benchmarks/host_overhead.py's machinery (not its timings): every mode runs the real train step
with the loop's own pieces, metrics are written and checkpoints saved where the loop would."""

import pytest

from benchmarks.host_overhead import MODES, format_result, measure, overheads
from tests.tiny_run import tiny_flags, write_corpus
from train import checkpoint
from train.config import load_config
from train.experiment import build_experiment
from train.metrics import read_metrics


def test_modes_run_the_loops_pieces_and_report_overheads(tmp_path):
  write_corpus(tmp_path)
  flags = tiny_flags(tmp_path, tmp_path / 'unused', train__log_every=2, checkpoint__every=2)
  config = load_config('configs/tiny.py', [f for f in flags if f.startswith('--config.')])
  exp = build_experiment(config, progress=False)
  run_dir = tmp_path / 'bench'
  result = measure(exp, run_dir, steps=4, rounds=1, warmup=2)

  # 2 warm-up steps, then device, data, metrics, checkpoint: 4 steps each, state carried on.
  assert result['steps_taken'] == 2 + 4 * len(MODES)
  seconds = result['seconds_per_step']
  for times in (seconds, result['cpu_seconds_per_step']):
    assert list(times) == list(MODES) and all(len(v) == 1 and v[0] > 0 for v in times.values())
  # Train records (every 2nd step) only from the modes that read metrics: steps 11-14 and 15-18.
  assert [r['step'] for r in read_metrics(run_dir, 'train')] == [12, 14, 16, 18]
  # Saves every 2 steps, mid-round, only in the checkpoint mode; complete on disk.
  assert [step for step, _ in result['saves']] == [15, 17]
  assert checkpoint.latest_step(run_dir / 'checkpoints') == 17

  base = seconds['device'][0]
  assert overheads(seconds) == pytest.approx({m: v[0] / base - 1 for m, v in seconds.items()})
  text = format_result(dict(result, config='tiny', steps=4, rounds=1, batch=8, seq_len=32,
                            overhead=overheads(seconds)))
  assert all(mode in text for mode in MODES) and 'checkpoint saves: 2' in text
