"""The backend line a run prints at start, and the stop when a config's platform is not there.

Devices of other platforms are stand-ins carrying the three attributes jax devices have
(`platform`, `device_kind`, `process_index`); the CPU case uses this machine's real devices and
goes through the CLI.
"""

import types

import pytest

import launch
from errors import UserError
from sharding import platform


def _devices(kind: str, count: int, device_kind: str, processes: int = 1):
  return [types.SimpleNamespace(platform=kind, device_kind=device_kind,
                                process_index=i * processes // count) for i in range(count)]


def test_the_line_names_backend_devices_and_processes():
  line = platform.check_platform('tpu', _devices('tpu', 8, 'TPU v4', processes=2))
  assert line == 'backend: tpu, 8 devices (TPU v4) on 2 processes'
  assert platform.check_platform('gpu', _devices('cuda', 1, 'NVIDIA H100')) == \
      'backend: gpu, 1 device (NVIDIA H100)'


def test_an_accelerator_config_on_cpu_names_the_install():
  cpu = _devices('cpu', 1, 'cpu')
  with pytest.raises(UserError, match=r'only CPU devices.*`make install ACCEL=tpu`'):
    platform.check_platform('tpu', cpu)
  with pytest.raises(UserError, match=r'`make install ACCEL=cuda12 \(or ACCEL=cuda13\)`'):
    platform.check_platform('gpu', cpu)
  with pytest.raises(UserError, match='found gpu devices; set --config.mesh.platform=gpu'):
    platform.check_platform('tpu', _devices('gpu', 2, 'NVIDIA A100'))
  with pytest.raises(UserError, match="'xpu' is not one of auto, cpu, gpu, tpu"):
    platform.check_platform('xpu', cpu)


def test_auto_on_cpu_points_at_unused_hardware(tmp_path):
  cpu = _devices('cpu', 1, 'cpu')
  root = str(tmp_path)
  assert platform.check_platform('auto', cpu, hardware_root=root) == 'backend: cpu, 1 device (cpu)'
  (tmp_path / 'dev').mkdir()
  (tmp_path / 'dev' / 'accel0').touch()  # what a TPU VM's chips look like
  line = platform.check_platform('auto', cpu, hardware_root=root)
  assert line.endswith('this machine has a TPU that jax does not see: make install ACCEL=tpu '
                       'to use it')
  assert platform.check_platform('cpu', cpu, hardware_root=root) == 'backend: cpu, 1 device (cpu)'


def test_train_stops_in_one_line_before_touching_anything(tmp_path, capsys):
  run_dir = tmp_path / 'run'
  code = launch.main(['train', '--run_dir', str(run_dir), '--config.mesh.platform=tpu'])
  captured = capsys.readouterr()
  assert code == 2
  assert captured.err.strip().splitlines() == [
      "error: config.mesh.platform='tpu' but jax found only CPU devices: this environment has "
      'the CPU build of jax; run `make install ACCEL=tpu` (or --config.mesh.platform=auto to '
      'train on the CPU)']
  assert not run_dir.exists()


def test_platform_cpu_passes_and_prints_the_backend(capsys):
  platform.report_platform('cpu')
  assert capsys.readouterr().out.startswith('backend: cpu, ')
