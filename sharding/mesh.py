"""Builds the device mesh from `config.mesh`: axes ('data', 'fsdp', 'tensor'), -1 = the rest.

The mesh uses Auto axis types so that linen's logical constraints apply (see DESIGN.md notes).
"""

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from errors import UserError

MESH_AXES = ('data', 'fsdp', 'tensor')


def resolve_mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """The concrete (data, fsdp, tensor) sizes for `num_devices`, resolving one -1."""
  sizes = [int(mesh_cfg[name]) for name in MESH_AXES]
  described = ', '.join(f'{n}={s}' for n, s in zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1:
    raise UserError(f'mesh ({described}) has more than one -1; set all but one axis explicitly')
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f'mesh ({described}) has a size that is not positive or -1; fix config.mesh')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise UserError(f'mesh ({described}) cannot fill {num_devices} devices: {known} does not '
                      f'divide {num_devices}; change config.mesh')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(f'mesh ({described}) needs {math.prod(sizes)} devices but {num_devices} are '
                    f'present; make the product equal {num_devices} or use -1 for one axis')
  return tuple(sizes)


def build_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh over `devices` (default: all) shaped by `mesh_cfg`."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_cfg, len(devices))
  device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
