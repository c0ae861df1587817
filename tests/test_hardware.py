"""The peak behind MFU: published dense bf16 peaks looked up by device kind, a measured peak on
CPU and on unknown accelerators, and every printed MFU naming the peak it is of."""

import types

import pytest

from train import hardware
from tools.bench import format_benchmark
from train.hardware import PeakFlops, published_peak
from train.loop import format_summary
from train.progress import Progress

# device_kind strings as jax reports them, with the vendors' dense bf16 peaks (TFLOP/s).
KNOWN = [
    ('TPU v4', 'TPU v4', 275), ('TPU v5 lite', 'TPU v5e', 197), ('TPU v5e', 'TPU v5e', 197),
    ('TPU v5', 'TPU v5p', 459), ('TPU v5p', 'TPU v5p', 459), ('TPU v6 lite', 'TPU v6e', 918),
    ('NVIDIA A100-SXM4-40GB', 'A100', 312), ('NVIDIA A100-SXM4-80GB', 'A100', 312),
    ('NVIDIA A100-PCIE-40GB', 'A100', 312), ('NVIDIA H100 80GB HBM3', 'H100 SXM', 989.4),
    ('NVIDIA H100 PCIe', 'H100 PCIe', 756), ('NVIDIA H200', 'H200', 989.4),
]


@pytest.mark.parametrize('kind, chip, tflops', KNOWN)
def test_published_peaks_by_device_kind(kind, chip, tflops):
  assert published_peak(kind) == (chip, pytest.approx(tflops * 1e12))


@pytest.mark.parametrize('kind', ['NVIDIA H100 NVL', 'NVIDIA GH200 480GB', 'NVIDIA H200 NVL',
                                  'TPU v3', 'TPU v4 lite', 'cpu', 'Tesla V100-SXM2-16GB'])
def test_other_kinds_are_not_guessed(kind):
  assert published_peak(kind) is None


def fake_devices(platform: str, kind: str, count: int):
  return [types.SimpleNamespace(platform=platform, device_kind=kind)] * count


def test_an_accelerator_in_the_table_uses_its_published_peak(monkeypatch):
  monkeypatch.setattr(hardware, 'measured_peak_flops', lambda: pytest.fail('measured'))
  peak = PeakFlops(fake_devices('gpu', 'NVIDIA H100 80GB HBM3', 8))
  assert peak.value == pytest.approx(8 * 989.4e12) and peak.refresh() == peak.value
  assert peak.label == '8 x H100 SXM bf16 peak 989 TFLOP/s'
  assert PeakFlops(fake_devices('tpu', 'TPU v5 lite', 1)).label == 'TPU v5e bf16 peak 197 TFLOP/s'


def test_cpu_and_unknown_accelerators_are_measured_and_say_so(monkeypatch):
  measurements = iter([300e9, 320e9, 310e9, 2e14])
  monkeypatch.setattr(hardware, 'measured_peak_flops', lambda: next(measurements))
  cpu = PeakFlops(fake_devices('cpu', 'cpu', 1))
  assert cpu.label == 'measured CPU peak 300 GFLOP/s'
  assert cpu.refresh() == 320e9 and cpu.refresh() == 320e9  # keeps the best measurement
  assert cpu.label == 'measured CPU peak 320 GFLOP/s'
  unknown = PeakFlops(fake_devices('gpu', 'NVIDIA H100 NVL', 2))
  assert unknown.value == 4e14
  assert unknown.label == ('measured GPU peak 400 TFLOP/s '
                           '(NVIDIA H100 NVL: no published peak known)')


def test_every_printed_mfu_names_its_peak(capsys):
  label = 'H100 SXM bf16 peak 989 TFLOP/s'
  progress = Progress(0, 10, log_every=1)
  progress.update(0, 2.5, 1000.0, 0.412, label)
  assert f'MFU 41.2% of {label}' in capsys.readouterr().err
  summary = {'steps': 10, 'wall_s': 5.0, 'tokens_per_s': 1000.0, 'mfu': 0.412, 'mfu_of': label,
             'train_loss': 1.0, 'train_bits_per_byte': 1.0, 'validation_loss': 1.0,
             'validation_bits_per_byte': 1.0, 'unigram_bits_per_byte': 2.0}
  assert f'MFU 41.2% of {label})' in format_summary(summary, 'runs/x')
  bench = {'config': 'tiny', 'tokens_per_s': 1000.0, 'step_s': 0.1, 'mfu': 0.412,
           'mfu_of': label, 'devices': 1, 'backend': 'gpu', 'batch': 8, 'seq_len': 32,
           'compile_s': 1.0}
  assert f'MFU 41.2% of {label} on 1 gpu device(s)' in format_benchmark(bench)
