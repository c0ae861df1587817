"""Weight decay follows what a parameter is, not its rank: `model.scan_layers` (which stacks
every per-layer parameter along a leading 'layers' axis) changes neither the decayed set nor,
started from the same parameters, the losses of a few decayed training steps."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.base import get_config
from models.config import TransformerConfig
from models.transformer import Transformer, init_params
from train.optim import decay_mask, make_optimizer
from train.schedules import make_schedule
from train.state import TrainState, path_names
from train.step import train_step

# Every kind of parameter: learned positions, an untied head, biases, LayerNorm's scale and bias.
MODEL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_len=16, use_bias=True,
             norm='layernorm', position='learned', tie_embeddings=False)
SEQ_LEN = 16


def model_config(scan_layers: bool) -> TransformerConfig:
  return TransformerConfig(**MODEL, scan_layers=scan_layers).derived()


def unrolled_and_scanned_params():
  """The same initial parameters, one subtree per layer and stacked for `nn.scan`."""
  unrolled = nn.meta.unbox(init_params(model_config(False), jax.random.PRNGKey(0), SEQ_LEN))
  layer_names = [f'layer_{i}' for i in range(MODEL['n_layers'])]
  scanned = {k: v for k, v in unrolled.items() if k not in layer_names}
  scanned['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *[unrolled[n] for n in layer_names])
  return unrolled, scanned


def roles(mask) -> dict[tuple[str, ...], bool]:
  """{path with the layer index dropped: decayed}: 'layer_1/attn/query/kernel' -> 'attn/...'."""
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  named = {path_names(path): decayed for path, decayed in flat}
  return {(path[1:] if path[0].startswith('layer') else path): decayed
          for path, decayed in named.items()}


def test_the_decayed_set_is_the_same_with_and_without_scan():
  unrolled, scanned = unrolled_and_scanned_params()
  assert scanned['layers']['attn_norm']['scale'].shape == (2, 32)  # rank 2 under scan
  assert scanned['layers']['attn']['query']['bias'].shape == (2, 2, 16)
  unrolled_roles, scanned_roles = roles(decay_mask(unrolled)), roles(decay_mask(scanned))
  assert unrolled_roles == scanned_roles
  decayed = {path for path, d in scanned_roles.items() if d}
  assert decayed == {path for path in scanned_roles
                     if path[-1] in ('kernel', 'embedding', 'position_embedding')}
  assert ('attn_norm', 'scale') not in decayed and ('attn', 'query', 'bias') not in decayed
  assert all(roles(decay_mask(scanned, decay_norms_and_biases=True)).values())


def losses_of_training(scan_layers: bool, params, steps: int = 6) -> list[float]:
  optim = get_config().optim
  optim.update(name='adamw', lr=1e-2, weight_decay=1.0, schedule='constant', warmup_steps=0)
  tx = make_optimizer(optim, total_steps=steps)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1), skipped_steps=jnp.zeros((), jnp.int32))
  step_fn = jax.jit(functools.partial(
      train_step, model=Transformer(model_config(scan_layers)), tx=tx,
      schedule=make_schedule(optim, steps), accum_steps=1))
  tokens = np.random.default_rng(0).integers(0, MODEL['vocab_size'], (steps, 4, SEQ_LEN + 1))
  losses = []
  for batch in tokens:
    state, metrics = step_fn(state, jnp.asarray(batch, jnp.int32))
    losses.append(float(metrics['loss']))
  return losses


def test_training_with_and_without_scan_gives_the_same_losses_under_weight_decay():
  unrolled, scanned = unrolled_and_scanned_params()
  unrolled_losses = losses_of_training(False, unrolled)
  scanned_losses = losses_of_training(True, scanned)
  # Decay (lr * wd = 1e-2 per step) acts from step 1: decaying the stacked norm scales and
  # biases under scan (as a rank-based mask did) moves the losses by up to 1e-4 relative by
  # step 6, fifty times this tolerance.
  np.testing.assert_allclose(scanned_losses, unrolled_losses, rtol=2e-6)
