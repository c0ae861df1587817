"""muP (maximal update parameterization, Tensor Programs V): each parameter's role and its scales.

Under `model.parameterization = 'mup'` a model of width d_model = m * mup_base_width behaves, at
every width, like the base model does under SP: activations and their updates stay the same
size as width grows, so a learning rate tuned at the base width stays best. `sp` changes nothing.

A parameter's role comes from the logical axis names it already carries (no list of names):
width axes are 'embed' (d_model), 'mlp' (d_ff) and the attention axes 'heads', 'kv_heads',
'head_dim' (heads x head_dim grows with width); 'vocab' and unnamed axes (None: positions) are
finite; 'layers' (scan) is ignored.

  input   (vocab, embed) or (None, embed): from a finite space into width (embeddings)
  readout (embed, vocab): from width to the finite vocabulary (an untied lm_head)
  hidden  axes in two width groups, e.g. (embed, mlp), (embed, heads, head_dim)
  vector  axes in one width group only: norm scales, biases

What each role gets here (init relative to SP's N(0, init_std), which it equals at the base):

  hidden  init std x 1/sqrt(m) (variance ~ 1/fan_in); Adam-like lr x 1/m, SGD-like lr x 1
  input   init unchanged; Adam-like lr x 1, SGD-like lr x m
  vector  init unchanged; Adam-like lr x 1, SGD-like lr x m
  readout init unchanged (or zero: mup_zero_readout), output multiplied by 1/m;
          Adam-like lr x 1, SGD-like lr x m

The logits are multiplied by 1/m whatever holds the readout (a tied embedding table too), and
attention logits use sqrt(base_head_dim) / head_dim instead of 1 / sqrt(head_dim). The learning
rate multipliers live in train/mup.py; this module is what the model itself needs.
"""

import math

import jax.numpy as jnp

from models.config import TransformerConfig

ROLES = ('input', 'hidden', 'readout', 'vector')
WIDTH_GROUPS = {'embed': 'embed', 'mlp': 'mlp', 'heads': 'attention',
                'kv_heads': 'attention', 'head_dim': 'attention'}
FINITE_AXES = ('vocab', None)
IGNORED_AXES = ('layers',)


def role_of(axes) -> str:
  """The muP role of a parameter with these logical axis names (see the module docstring)."""
  axes = tuple(a for a in axes if a not in IGNORED_AXES)
  unknown = [a for a in axes if a not in WIDTH_GROUPS and a not in FINITE_AXES]
  if unknown:
    raise ValueError(f'logical axis {unknown[0]!r} is neither a width axis {tuple(WIDTH_GROUPS)} '
                     f'nor a finite one {FINITE_AXES}; add it to models/mup.py')
  groups = [WIDTH_GROUPS[a] for a in axes if a in WIDTH_GROUPS]
  finite = [a for a in axes if a in FINITE_AXES]
  if len(set(groups)) >= 2:
    return 'hidden'
  if not groups:
    raise ValueError(f'parameter with axes {axes} has no width axis; muP cannot place it')
  if not finite:
    return 'vector'
  first_width = next(i for i, a in enumerate(axes) if a in WIDTH_GROUPS)
  if 'vocab' in axes and axes.index('vocab') > first_width:
    return 'readout'
  return 'input'


def width_mult(cfg: TransformerConfig) -> float:
  """m = d_model / mup_base_width (1 under SP)."""
  if cfg.parameterization != 'mup':
    return 1.0
  return cfg.d_model / cfg.mup_base_width


def init_multiplier(axes, cfg: TransformerConfig) -> float:
  """What SP's initial values of a parameter with these axes are multiplied by."""
  role = role_of(axes)
  if role == 'hidden':
    return 1.0 / math.sqrt(width_mult(cfg))
  if role == 'readout' and cfg.mup_zero_readout:
    return 0.0
  return 1.0


def scaled_init(init, axes, cfg: TransformerConfig):
  """`init` with its values multiplied by `init_multiplier(axes, cfg)` (itself when that is 1)."""
  multiplier = init_multiplier(axes, cfg)
  if multiplier == 1.0:
    return init
  return lambda key, shape, dtype: init(key, shape, dtype) * jnp.asarray(multiplier, dtype)


def query_init_scale(cfg: TransformerConfig) -> float:
  """0 (the query projection starts at zero) with mup_zero_query under muP, else 1."""
  return 0.0 if cfg.parameterization == 'mup' and cfg.mup_zero_query else 1.0


def readout_multiplier(cfg: TransformerConfig) -> float:
  """The logits are multiplied by this: 1/m (base_width / width)."""
  return 1.0 / width_mult(cfg)


def base_head_dim(cfg: TransformerConfig) -> float:
  """head_dim at the base width: mup_base_head_dim, or head_dim / m (heads fixed as width grows)."""
  return cfg.mup_base_head_dim or cfg.head_dim / width_mult(cfg)


def attention_scale(cfg: TransformerConfig) -> float:
  """Queries are multiplied by this: 1/sqrt(head_dim) under SP; sqrt(base_head_dim) / head_dim
  under muP, equal to SP's at the base and ~ 1/head_dim as head_dim grows."""
  if cfg.parameterization != 'mup':
    return 1.0 / math.sqrt(cfg.head_dim)
  return math.sqrt(base_head_dim(cfg)) / cfg.head_dim
