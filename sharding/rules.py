"""Rule sets: how logical axis names (from `models/`) map onto mesh axes.

All sets come from one function, `make_rules(fsdp, tensor)`:
- data parallelism is always on: the batch is split over ('data', 'fsdp');
- fsdp (ZeRO-3) splits each parameter's 'embed' dimension over the 'fsdp' axis, so parameters,
  gradients and optimizer state are all sharded;
- tensor (Megatron) splits heads, the MLP hidden dim and the vocabulary over 'tensor': Q/K/V and
  MLP-in are column parallel, attention-out and MLP-out row parallel, embedding and logits
  vocabulary parallel. Activation names (act_*) pin the matching activations.
"""

from errors import UserError

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

RULE_SETS = {
    'dp': dict(fsdp=False, tensor=False),
    'fsdp': dict(fsdp=True, tensor=False),
    'tp': dict(fsdp=False, tensor=True),
    'fsdp_tp': dict(fsdp=True, tensor=True),
    'dp_fsdp_tp': dict(fsdp=True, tensor=True),
}


def make_rules(fsdp: bool, tensor: bool, shard_kv_heads: bool = True) -> Rules:
  """Logical-to-mesh rules for a strategy; unmentioned logical axes are replicated."""
  tp = 'tensor' if tensor else None
  return (
      ('act_batch', ('data', 'fsdp')),
      ('act_length', None),
      ('act_embed', None),
      ('act_heads', tp),
      ('act_mlp', tp),
      ('act_vocab', tp),
      ('embed', 'fsdp' if fsdp else None),
      ('heads', tp),
      ('kv_heads', tp if shard_kv_heads else None),
      ('mlp', tp),
      ('vocab', tp),
      ('head_dim', None),
      ('layers', None),
  )


def rules_for(name: str, n_kv_heads: int = 0, tensor_size: int = 1) -> Rules:
  """The named rule set; KV heads are replicated when the tensor axis does not divide them."""
  if name not in RULE_SETS:
    raise UserError(f'sharding.rules={name!r} is not one of {", ".join(RULE_SETS)}; pick one')
  shard_kv = not n_kv_heads or n_kv_heads % tensor_size == 0
  return make_rules(**RULE_SETS[name], shard_kv_heads=shard_kv)
