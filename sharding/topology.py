"""TPU slices without TPUs: the compile-only devices of a topology such as 'v5p:4x4x4'.

With `libtpu` installed (the version the installed jax pins in its `tpu` extra), jax describes
any TPU slice on a machine that has none: `jax.experimental.topologies.get_topology_desc(
topology_name='v5p:4x4x4', platform='tpu', num_slices=2)` returns devices that can be laid out
in a mesh and compiled for, but not run on. `launch.py plan` compiles the real train step over
them (tools/plan.py). libtpu stays optional: without it `topology_devices` raises one line that
names the install.

A topology is '<generation>:<chips per axis>', e.g. 'v4:2x2x2', 'v5e:4x4', 'v5p:4x4x8',
'v6e:8x8'; one device per chip (v4 and v5p as megacore, the way training sees them).
"""

import contextlib
import importlib.metadata
import importlib.util
import math
import os
import re

from errors import UserError

# Generation -> the chip name of train/hardware.py's tables and the number of axes of its torus.
GENERATIONS = {'v4': ('TPU v4', 3), 'v5e': ('TPU v5e', 2), 'v5p': ('TPU v5p', 3),
               'v6e': ('TPU v6e', 2)}
_MEGACORE = ('v4',)  # two TensorCores per chip shown as one device only if asked for
# libtpu looks for a TPU VM's metadata unless told it is alone; and takes a lock file that would
# stop a second `plan` (or a test) running beside the first.
_QUIET_ENV = {'TPU_SKIP_MDS_QUERY': '1', 'TPU_WORKER_ID': '0',
              'TPU_WORKER_HOSTNAMES': 'localhost', 'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
  """'v5p:4x4x4' -> ('v5p', (4, 4, 4)); UserError naming the accepted form otherwise."""
  match = re.fullmatch(r'(v\d+[ep]?):(\d+(?:x\d+)*)', name.strip())
  generation = match.group(1) if match else None
  if generation not in GENERATIONS:
    raise UserError(f'--topology {name!r} is not <generation>:<chips per axis> with a generation '
                    f'of {", ".join(GENERATIONS)}; e.g. v5e:2x2, v5p:4x4x4, v6e:8x8')
  axes = tuple(int(x) for x in match.group(2).split('x'))
  if len(axes) != GENERATIONS[generation][1] or min(axes) < 1:
    rank = GENERATIONS[generation][1]
    raise UserError(f'--topology {name!r}: a {generation} slice has {rank} axes of chips, e.g. '
                    f'{generation}:{"x".join(["2"] * rank)}')
  return generation, axes


def chip_name(topology: str) -> str:
  """'v5p:4x4x4' -> 'TPU v5p' (the key of train/hardware.py's tables)."""
  return GENERATIONS[parse_topology(topology)[0]][0]


def chips_in(topology: str, slices: int = 1) -> int:
  return math.prod(parse_topology(topology)[1]) * slices


def libtpu_install_hint() -> str:
  """The install line for the libtpu that this jax pins (read from jax's own metadata)."""
  import jax  # pylint: disable=import-outside-toplevel
  pin = next((r.split(';')[0].strip() for r in importlib.metadata.requires('jax') or ()
              if r.startswith('libtpu') and 'tpu' in r.split(';')[-1]), 'libtpu')
  return f"pip install '{pin}' (or pip install 'jax[tpu]=={jax.__version__}')"


def libtpu_installed() -> bool:
  return importlib.util.find_spec('libtpu') is not None


@contextlib.contextmanager
def _quiet_libtpu_env():
  """libtpu's environment for a machine without TPUs; its start-up warnings (written by C++
  straight to file descriptor 2) are dropped: failures still raise."""
  saved = {key: os.environ.get(key) for key in _QUIET_ENV}
  for key, value in _QUIET_ENV.items():
    os.environ.setdefault(key, value)
  stderr_copy = os.dup(2)
  with open(os.devnull, 'w', encoding='utf-8') as devnull:
    os.dup2(devnull.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(stderr_copy, 2)
    os.close(stderr_copy)
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


def topology_devices(topology: str, slices: int = 1) -> list:
  """The compile-only devices of `slices` copies of a TPU slice (UserError without libtpu)."""
  generation, _ = parse_topology(topology)
  if slices < 1:
    raise UserError(f'--slices {slices}: give 1 or more slices')
  if not libtpu_installed():
    raise UserError(f'launch.py plan compiles for TPUs with libtpu, which is not installed: '
                    f'{libtpu_install_hint()}')
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  options = {'chip_config_name': 'megacore'} if generation in _MEGACORE else {}
  if slices > 1:
    options['num_slices'] = slices
  with _quiet_libtpu_env():
    try:
      described = topologies.get_topology_desc(topology_name=topology, platform='tpu', **options)
    except Exception as e:  # pylint: disable=broad-except  # jax raises JaxRuntimeError
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f'libtpu does not know the topology {topology!r} ({first}); use a slice '
                      'shape Cloud TPU offers, e.g. v5e:2x4, v5p:2x2x2') from e
  return list(described.devices)
