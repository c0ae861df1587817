"""`launch.py memory`: what one train step of a config costs each device, without training.

Compiles the step on the config's mesh (real devices, or simulated CPU devices with
`launch.py memory --devices 8`), from abstract shapes only: no parameters are allocated and no
corpus is prepared. Reports the per-device bytes of the parameters, optimizer state and batch
(theory, from the shardings), `compiled.memory_analysis()`, and the collectives in the
compiled program grouped by the mesh axes they run over.
"""

import json

import jax

from models.counting import param_count
from sharding import report
from sharding.mesh import mesh_shape_text
from sharding.rules import describe
from train.experiment import build_experiment, compile_train_step
from train.state import path_names


def build_report(config, devices=None) -> dict:
  """A JSON-able dict: mesh, rules, notes, theory bytes, compiled bytes, collectives."""
  exp = build_experiment(config, with_data=False, devices=devices)
  compiled, abstract = compile_train_step(exp), exp.abstract_state
  batch = jax.ShapeDtypeStruct((config.train.batch_size, config.data.seq_len + 1), 'int32',
                               sharding=exp.batch_sharding)
  other = (abstract.step, abstract.rng, abstract.skipped_steps)
  parts = {name: (report.whole_bytes(tree), report.shard_bytes(tree))
           for name, tree in (('params', abstract.params), ('opt_state', abstract.opt_state),
                              ('other state', other), ('batch', batch))}
  leaves = {'/'.join(path_names(path)):
            (report.whole_bytes(leaf), report.shard_bytes(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract.params)[0]}
  found = report.collectives(compiled.as_text(), exp.mesh)
  return {
      'config': config.name,
      'rules': config.sharding.rules,
      'mesh': {name: int(size) for name, size in exp.mesh.shape.items()},
      'mesh_text': mesh_shape_text(exp.mesh),
      'rule_table': describe(exp.rules),
      'notes': exp.notes,
      'parameters': param_count(exp.model_cfg),
      'parts': parts,
      'param_leaves': leaves,  # path -> (whole bytes, bytes on one device)
      'memory': report.memory(compiled),
      'collectives': [[c.op, list(c.axes), c.bytes, c.name] for c in found],
  }


def format_report(result: dict) -> str:
  """The report `launch.py memory` prints."""
  found = [report.Collective(op, tuple(axes), size, name)
           for op, axes, size, name in result['collectives']]
  lines = [f"config {result['config']}: {result['parameters']:,} parameters",
           f"mesh: {result['mesh_text']}",
           f"sharding.rules={result['rules']}:",
           *('  ' + line for line in result['rule_table'].splitlines()),
           *(f'note: {note}' for note in result['notes']),
           report.format_report(result['parts'], result['memory'], found)]
  return '\n'.join(lines)


def memory(config, simulated_devices: int, as_json: bool) -> int:
  """`launch.py memory`: prints the report (as JSON if asked), on `simulated_devices` CPU
  devices if not 0 (call before anything starts JAX's backends)."""
  if simulated_devices:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', simulated_devices)
  result = build_report(config)
  print(json.dumps(result) if as_json else format_report(result))
  return 0
