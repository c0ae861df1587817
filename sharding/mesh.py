"""Builds the device mesh from `config.mesh`: axes ('data', 'fsdp', 'tensor'), -1 = the rest.

`mesh.data`, `mesh.fsdp` and `mesh.tensor` size the axes within one slice (the fast network,
ICI on TPU, NVLink on GPU); one of them may be -1. `mesh.dcn_data` > 1 adds a second, slower
level for multi-slice pods or several GPU hosts: the 'data' axis then spans `dcn_data` slices,
each slice holding a whole (data, fsdp, tensor) sub-mesh, so only data-parallel traffic crosses
the slow links. Slices are told apart by `device.slice_index` (TPU) or else by process, and
laid out by `mesh_utils.create_hybrid_device_mesh`.

Devices are laid out with `jax.experimental.mesh_utils` so that 'tensor' (the most talkative
axis) lands on the nearest devices. The mesh uses Auto axis types so that linen's logical
constraints apply (see DESIGN.md notes).
"""

import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from errors import UserError

MESH_AXES = ('data', 'fsdp', 'tensor')


def _describe(mesh_cfg) -> str:
  text = ', '.join(f'{name}={int(mesh_cfg[name])}' for name in MESH_AXES)
  dcn = int(mesh_cfg.get('dcn_data', 1))
  return text + (f', dcn_data={dcn}' if dcn != 1 else '')


def resolve_mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """The concrete per-slice (data, fsdp, tensor) sizes for `num_devices`, resolving one -1.

  With `dcn_data` slices, each slice has num_devices // dcn_data devices; the full mesh is
  (dcn_data * data, fsdp, tensor).
  """
  described = _describe(mesh_cfg)
  dcn = int(mesh_cfg.get('dcn_data', 1))
  if dcn < 1 or num_devices % dcn:
    raise UserError(f'mesh ({described}): dcn_data must be a positive divisor of the '
                    f'{num_devices} devices; fix config.mesh.dcn_data')
  per_slice = num_devices // dcn
  sizes = [int(mesh_cfg[name]) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise UserError(f'mesh ({described}) has more than one -1; set all but one axis of '
                    'config.mesh explicitly')
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f'mesh ({described}) has a size that is not positive or -1; fix config.mesh')
  known = math.prod(s for s in sizes if s != -1)
  where = f'{per_slice} devices per slice' if dcn > 1 else f'{num_devices} devices'
  if -1 in sizes:
    if per_slice % known:
      raise UserError(f'mesh ({described}) cannot fill {where}: {known} does not divide '
                      f'{per_slice}; change config.mesh')
    sizes[sizes.index(-1)] = per_slice // known
  if math.prod(sizes) != per_slice:
    raise UserError(f'mesh ({described}) needs {math.prod(sizes) * dcn} devices but '
                    f'{num_devices} are present; set config.mesh so that data*fsdp*tensor*dcn_data '
                    f'= {num_devices}, or -1 for one axis')
  return tuple(sizes)


def _slices_are_processes(devices: Sequence, count: int) -> bool:
  """False if `slice_index` (TPU) splits the devices into `count` slices, True if processes do."""
  for key in ('slice_index', 'process_index'):
    if len({getattr(device, key, 0) for device in devices}) == count:
      return key == 'process_index'
  raise UserError(f'mesh.dcn_data={count} but the devices do not form {count} slices (by '
                  'slice_index, nor by process); set config.mesh.dcn_data to the slice count')


def device_grid(shape: Sequence[int], devices: Sequence, dcn_data: int = 1) -> np.ndarray:
  """Devices arranged as (dcn_data * data, fsdp, tensor), slice by slice along 'data'."""
  if dcn_data == 1:
    return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  return mesh_utils.create_hybrid_device_mesh(
      shape, (dcn_data, 1, 1), devices,
      process_is_granule=_slices_are_processes(devices, dcn_data),
      allow_split_physical_axes=True)


def build_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh over `devices` (default: all, across every process) shaped by `mesh_cfg`."""
  devices = list(jax.devices() if devices is None else devices)
  dcn = int(mesh_cfg.get('dcn_data', 1))
  shape = resolve_mesh_shape(mesh_cfg, len(devices))
  grid = device_grid(shape, devices, dcn)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_shape_text(mesh: Mesh) -> str:
  """e.g. 'data=2 fsdp=2 tensor=2 (8 devices)'."""
  sizes = ' '.join(f'{name}={mesh.shape[name]}' for name in mesh.axis_names)
  return f'{sizes} ({mesh.devices.size} devices)'
