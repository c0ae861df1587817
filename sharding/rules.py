"""Rule sets: how logical axis names (from `models/`) map onto the mesh axes data, fsdp, tensor.

Every set comes from one function, `make_rules(zero3, tensor, data_replicas)`:

- tensor (Megatron): heads, kv_heads, the MLP hidden dim and the vocabulary split over 'tensor'.
  Q/K/V and MLP-in kernels are then column parallel (split on their output dim), attention-out
  and MLP-out row parallel (split on their input dim), embedding and logits vocabulary parallel.
  Without it the 'tensor' mesh axis is one more data-parallel axis.
- The batch is split over every mesh axis that is not doing tensor parallelism.
- zero3 (FSDP): each parameter's 'embed' dim, hence its gradient and optimizer state, split over
  the batch axes; with data_replicas the 'data' axis keeps whole copies instead (hybrid sharding:
  parameters are gathered within an fsdp group, gradients all-reduced across groups, which suits
  a 'data' axis that spans slow links between slices).

| rules      | batch over          | 'embed' (ZeRO-3) over | heads/kv/mlp/vocab over |
|------------|---------------------|-----------------------|-------------------------|
| dp         | data, fsdp, tensor  | -                     | -                       |
| fsdp       | data, fsdp, tensor  | data, fsdp, tensor    | -                       |
| dp_fsdp    | data, fsdp, tensor  | fsdp, tensor          | -                       |
| tp         | data, fsdp          | -                     | tensor                  |
| fsdp_tp    | data, fsdp          | data, fsdp            | tensor                  |
| dp_fsdp_tp | data, fsdp          | fsdp                  | tensor                  |

Activation names (act_*) pin the matching activations: the batch over the batch axes, heads,
MLP hidden and vocabulary over 'tensor', the residual stream replicated over 'tensor'.

`rules_for` then fits a set to the model: a dimension that the mesh axes do not divide is
replicated (vocab, kv_heads) or sharded over the leading axes that divide it (embed), each with
a note; heads or d_ff that the tensor axis does not divide are an error.
"""

import math

from errors import UserError

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

RULE_SETS = {
    'dp': dict(zero3=False, tensor=False, data_replicas=False),
    'fsdp': dict(zero3=True, tensor=False, data_replicas=False),
    'dp_fsdp': dict(zero3=True, tensor=False, data_replicas=True),
    'tp': dict(zero3=False, tensor=True, data_replicas=False),
    'fsdp_tp': dict(zero3=True, tensor=True, data_replicas=False),
    'dp_fsdp_tp': dict(zero3=True, tensor=True, data_replicas=True),
}

# A parameter axis and the activation axis that must follow it when it falls back.
_ACTIVATION_OF = {'heads': 'act_heads', 'mlp': 'act_mlp', 'vocab': 'act_vocab'}
_MUST_DIVIDE = ('heads', 'mlp')  # tensor parallelism is pointless without these


def make_rules(zero3: bool, tensor: bool, data_replicas: bool = False) -> Rules:
  """Logical-to-mesh rules of one strategy; unmentioned logical axes are replicated."""
  batch = ('data', 'fsdp') if tensor else ('data', 'fsdp', 'tensor')
  params = None
  if zero3:
    params = batch[1:] if data_replicas else batch
  tp = 'tensor' if tensor else None
  return (
      ('act_batch', batch),
      ('act_length', None),
      ('act_embed', None),
      ('act_heads', tp),
      ('act_mlp', tp),
      ('act_vocab', tp),
      ('embed', params),
      ('heads', tp),
      ('kv_heads', tp),
      ('mlp', tp),
      ('vocab', tp),
      ('head_dim', None),
      ('layers', None),
  )


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def mesh_axes_of(rules: Rules, logical: str) -> tuple[str, ...]:
  """The mesh axes a logical axis is split over under `rules` (empty: replicated)."""
  return _as_tuple(dict(rules).get(logical))


def batch_axes(rules: Rules) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over."""
  return mesh_axes_of(rules, 'act_batch')


def fit_rules(rules: Rules, mesh_shape: dict, dims: dict) -> tuple[Rules, list[str]]:
  """`rules` adjusted so that every sharded parameter dim divides; plus a note per change.

  `mesh_shape` maps mesh axis -> size, `dims` logical axis -> size (e.g. {'vocab': 50257}).
  """
  table, notes = dict(rules), []
  for logical, size in dims.items():
    axes = _as_tuple(table.get(logical))
    used = tuple(a for a in axes if mesh_shape.get(a, 1) > 1)
    if size % math.prod(mesh_shape[a] for a in used) == 0:
      continue
    if logical in _MUST_DIVIDE:
      fix = {'heads': 'model.n_heads', 'mlp': 'model.d_ff'}[logical]
      ways = math.prod(mesh_shape[a] for a in used)
      raise UserError(f'{fix}={size} is not divisible by the {ways}-way split over '
                      f'{", ".join(used)}; change {fix} or config.mesh')
    kept = ()
    for axis in used:  # the longest prefix of axes whose product divides the dim
      if size % math.prod(mesh_shape[a] for a in kept + (axis,)):
        break
      kept += (axis,)
    table[logical] = kept or None
    if logical in _ACTIVATION_OF:
      table[_ACTIVATION_OF[logical]] = table[logical]
    where = f'over {", ".join(kept)}' if kept else 'replicated'
    hint = ' (set model.vocab_pad_multiple to shard it)' if logical == 'vocab' else ''
    notes.append(f"'{logical}' ({size}) does not divide over {', '.join(used)}: {where}{hint}")
  return tuple(table.items()), notes


def rules_for(name: str, mesh_shape: dict | None = None,
              dims: dict | None = None) -> tuple[Rules, list[str]]:
  """The named rule set fitted to a mesh and the model's dims; (rules, notes)."""
  if name not in RULE_SETS:
    raise UserError(f'sharding.rules={name!r} is not one of {", ".join(RULE_SETS)}; pick one')
  rules = make_rules(**RULE_SETS[name])
  if mesh_shape is None or dims is None:
    return rules, []
  return fit_rules(rules, dict(mesh_shape), dims)


def describe(rules: Rules) -> str:
  """One line per logical axis that is split, e.g. 'embed -> fsdp'."""
  lines = [f'{logical:>10} -> {", ".join(_as_tuple(axes))}' for logical, axes in rules if axes]
  return '\n'.join(lines) or '(everything replicated)'
