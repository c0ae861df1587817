"""Named rematerialisation (activation checkpointing) policies, chosen by `model.remat`.

- none: keep every activation (fastest, most memory);
- full: keep only each block's input, recompute everything in the backward pass;
- dots: keep matmul outputs, recompute elementwise work;
- dots_no_batch: keep matmul outputs without batch dimensions (weights-like), recompute the rest.
"""

import jax

_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(name: str):
  """The jax.checkpoint policy for a remat name other than 'none'."""
  if name not in _POLICIES:
    raise ValueError(f'unknown remat policy {name!r}; pick one of none, {", ".join(_POLICIES)}')
  return _POLICIES[name]
