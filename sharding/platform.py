"""Which accelerator a run found, and a stop when it is not the one its config asks for.

`config.mesh.platform` names the devices a run is meant for: 'auto' takes whatever jax finds,
'cpu', 'gpu' or 'tpu' insist. The usual way to get it wrong is an install that does not match
the machine: the CPU lock on a TPU VM or a GPU host gives a jax that sees only CPU devices and
would train there, hundreds of times slower, without a word. `check_platform` stops such a run
in one line naming the install to run (`make install ACCEL=tpu`), and `describe_devices` is the
line every run prints at start. With 'auto' and only CPU devices on a machine whose accelerator
device files exist (/dev/accel*, /dev/vfio on TPU VMs; /dev/nvidia0 on GPU hosts), the line says
which install would use them.
"""

import glob
from typing import Sequence

import jax

from errors import UserError

PLATFORMS = ('auto', 'cpu', 'gpu', 'tpu')
INSTALL = {'tpu': 'make install ACCEL=tpu', 'gpu': 'make install ACCEL=cuda12 (or ACCEL=cuda13)'}
# Device files that show accelerator hardware even when jax has no backend for it.
HARDWARE_FILES = {'tpu': ('/dev/accel*', '/dev/vfio/[0-9]*'), 'gpu': ('/dev/nvidia[0-9]*',)}


def found_platform(devices: Sequence) -> str:
  """'tpu', 'gpu' or 'cpu': the platform of the devices (jax calls CUDA and ROCm devices 'gpu')."""
  kinds = {device.platform for device in devices}
  return 'gpu' if kinds & {'gpu', 'cuda', 'rocm'} else min(kinds)


def hardware_present(root: str = '') -> list[str]:
  """Accelerators whose device files exist under `root` (tests pass a fake root)."""
  return [name for name, patterns in HARDWARE_FILES.items()
          if any(glob.glob(root + pattern) for pattern in patterns)]


def describe_devices(devices: Sequence) -> str:
  """e.g. 'backend: tpu, 8 devices (TPU v4) on 2 processes'."""
  kinds = sorted({getattr(device, 'device_kind', device.platform) for device in devices})
  processes = len({device.process_index for device in devices})
  text = (f'backend: {found_platform(devices)}, {len(devices)} device'
          f'{"s" if len(devices) != 1 else ""} ({", ".join(kinds)})')
  return text + (f' on {processes} processes' if processes > 1 else '')


def check_platform(platform: str, devices: Sequence | None = None, hardware_root: str = '') -> str:
  """The line to print at start; a UserError when the devices are not `platform`'s."""
  if platform not in PLATFORMS:
    raise UserError(f'mesh.platform={platform!r} is not one of {", ".join(PLATFORMS)}; fix '
                    'config.mesh.platform')
  devices = list(jax.devices() if devices is None else devices)
  found = found_platform(devices)
  line = describe_devices(devices)
  if platform == 'auto' or platform == found:
    if found == 'cpu' and platform == 'auto':
      unused = hardware_present(hardware_root)
      if unused:
        line += (f'; this machine has a {unused[0].upper()} that jax does not see: '
                 f'{INSTALL[unused[0]]} to use it')
    return line
  if found == 'cpu':
    raise UserError(f'config.mesh.platform={platform!r} but jax found only CPU devices: this '
                    f'environment has the CPU build of jax; run `{INSTALL[platform]}` (or '
                    "--config.mesh.platform=auto to train on the CPU)")
  raise UserError(f'config.mesh.platform={platform!r} but jax found {found} devices; set '
                  f'--config.mesh.platform={found} (or auto) for this machine')


def report_platform(platform: str) -> None:
  """Checks the platform on every process; process 0 prints the backend line."""
  line = check_platform(platform)
  if jax.process_index() == 0:
    print(line, flush=True)
