"""`launch.py bench`: the peak is measured several times between the timed steps (never inside
one), the best is kept, its spread is printed, and a printed MFU cannot exceed 100%."""

import pytest

from configs import tiny
from tools import bench
from train import hardware


def test_peak_positions_spread_from_first_to_after_last():
  assert bench.peak_positions(8, 5) == [0, 2, 4, 6, 8]
  assert bench.peak_positions(10, 4) == [0, 3, 7, 10]
  assert bench.peak_positions(1, 3) == [0, 0, 1]  # few steps: measurements repeat
  assert bench.peak_positions(5, 1) == [0] and bench.peak_positions(5, 0) == []


def test_steps_are_timed_alone_with_the_peak_measured_between_them():
  now, events = [0.0], []

  def clock():
    return now[0]

  def run_step():
    events.append('step')
    now[0] += 1.0  # a step takes 1 s

  def measure_peak():
    events.append('peak')
    now[0] += 100.0  # a peak measurement takes far longer: it must not count in any step

  times = bench.time_steps_between_peaks(run_step, measure_peak, 4, 3, clock=clock)
  assert times == [1.0] * 4
  assert events == ['peak', 'step', 'step', 'peak', 'step', 'step', 'peak']


def test_mfu_never_exceeds_one_with_a_measured_peak():
  assert bench.bounded_mfu(50.0, 100.0, measured=True) == (0.5, 100.0, False)
  assert bench.bounded_mfu(150.0, 100.0, measured=True) == (1.0, 150.0, True)
  # a published peak is a fact about the chip: not raised (the FLOP count would be wrong)
  assert bench.bounded_mfu(150.0, 100.0, measured=False) == (1.5, 100.0, False)


def test_peak_keeps_the_best_measurement_and_reports_its_spread(monkeypatch):
  measurements = iter([260e9, 300e9, 280e9, 299e9, 270e9])
  monkeypatch.setattr(hardware, 'measured_peak_flops', lambda: next(measurements))
  peak = hardware.PeakFlops()
  for _ in range(4):
    peak.refresh()
  assert peak.value == 300e9 and len(peak.samples) == 5
  assert peak.spread == 'best of 5; 260-300 GFLOP/s'


def small_config():
  c = tiny.get_config()
  c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.max_len = 32, 2, 2, 32
  c.data.seq_len, c.train.batch_size = 32, 4
  return c


def test_bench_on_cpu_never_prints_mfu_above_100_percent(monkeypatch):
  """A peak measured at 1 FLOP/s every time (a machine busy with other work) is raised to the
  step's own rate: MFU 100%, and the output says why."""
  calls = []
  monkeypatch.setattr(hardware, 'measured_peak_flops', lambda: calls.append(1) or 1.0)
  result = bench.benchmark_step(small_config(), steps=3, peak_measurements=4)
  assert len(calls) == 4 and result['peak_samples'] == [1.0] * 4
  assert result['mfu'] == pytest.approx(1.0) and result['peak_raised']
  assert result['peak_flops_per_s'] == pytest.approx(result['model_flops_per_s'])
  text = bench.format_benchmark(result)
  assert 'MFU 100.0%' in text and 'raised to the step' in text and 'best of 4' in text
  assert text.startswith(f"tiny: compile {result['compile_s']:.1f} s, then")
  assert result['attention'] == 'cpu' and result['matmul'] == 'openblas'  # auto on one CPU
  assert text.endswith('attention cpu, matmul openblas')
  assert result['compile_s'] > 0 and result['step_s_min'] <= result['step_s'] <= result['step_s_max']


def test_bench_with_the_real_peak_measurement():
  result = bench.benchmark_step(small_config(), steps=2, peak_measurements=3)
  assert 0 < result['mfu'] <= 1.0
  assert len(result['peak_samples']) == 3
  assert result['peak_flops_per_s'] == max(result['peak_samples']) or result['peak_raised']
