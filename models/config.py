"""The model's own frozen, hashable configuration, with derived sizes filled in.

`configs/` hold ml_collections dicts for whole runs; the model only sees this dataclass, built
with `TransformerConfig.from_dict(config.model)`, so `models/` imports nothing else of ours
(but errors.py). `configs/base.py` is the one source of the defaults: `from_dict` refuses a key
that is not a field, and tests/test_config.py checks that the fields and their defaults here are
the model keys and defaults there (the defaults here serve tests and tools that build a model
without a run config).
"""

import dataclasses

from errors import UserError

NORMS = ('rmsnorm', 'layernorm')
POSITIONS = ('rope', 'learned')
MLPS = ('swiglu', 'gelu')
REMAT_POLICIES = ('none', 'full', 'dots', 'dots_no_batch')
DTYPES = ('float32', 'bfloat16', 'float16')
PARAMETERIZATIONS = ('sp', 'mup')
ATTENTION_IMPLS = ('auto', 'chunked', 'cpu', 'xla', 'cudnn')
MATMUL_IMPLS = ('auto', 'xla', 'openblas')
KINDS = ('decoder', 'encoder', 'encoder_decoder')


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and choices of a Transformer. Zero means "derive the default"."""
  kind: str = 'decoder'  # decoder | encoder (bidirectional) | encoder_decoder (T5-style)
  vocab_size: int = 256
  vocab_pad_multiple: int = 1  # embedding/logit rows rounded up to a multiple of this
  d_model: int = 256
  n_layers: int = 4
  n_heads: int = 4
  n_kv_heads: int = 0
  head_dim: int = 0
  d_ff: int = 0
  max_len: int = 256
  norm: str = 'rmsnorm'
  norm_eps: float = 1e-5
  position: str = 'rope'
  rope_theta: float = 10000.0
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  attention_query_chunk: int = 128
  attention_impl: str = 'auto'
  attention_cache_bytes: int = -1
  matmul_impl: str = 'auto'
  mlp: str = 'swiglu'
  use_bias: bool = False
  tie_embeddings: bool = True
  dropout: float = 0.0
  init_std: float = 0.02
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  scan_layers: bool = False
  remat: str = 'none'
  parameterization: str = 'sp'
  mup_base_width: int = 0
  mup_base_head_dim: int = 0
  mup_zero_readout: bool = False
  mup_zero_query: bool = False

  @classmethod
  def from_dict(cls, values) -> 'TransformerConfig':
    """Builds from a mapping (e.g. `config.model`), deriving zero-valued sizes; UserError for a
    key that is not a field."""
    unknown = unknown_keys(values)
    if unknown:
      raise UserError(unknown[0])
    return cls(**dict(values)).derived()

  def derived(self) -> 'TransformerConfig':
    """Returns a copy with n_kv_heads, head_dim and d_ff resolved from their defaults."""
    n_kv_heads = self.n_kv_heads or self.n_heads
    head_dim = self.head_dim or (self.d_model // max(self.n_heads, 1))
    d_ff = self.d_ff
    if not d_ff:
      if self.mlp == 'swiglu':
        d_ff = 64 * -(-(8 * self.d_model // 3) // 64)  # 8/3 d, rounded up to 64
      else:
        d_ff = 4 * self.d_model
    return dataclasses.replace(self, n_kv_heads=n_kv_heads, head_dim=head_dim, d_ff=d_ff)

  @property
  def padded_vocab(self) -> int:
    """Rows of the embedding and logits: vocab_size rounded up to vocab_pad_multiple."""
    multiple = max(self.vocab_pad_multiple, 1)
    return multiple * -(-self.vocab_size // multiple)


def unknown_keys(values) -> list[str]:
  """A message for every key of `values` that is not a TransformerConfig field."""
  fields = [f.name for f in dataclasses.fields(TransformerConfig)]
  return [f"model.{key} is not a model setting (configs/base.py lists them: "
          f"{', '.join(fields)}); remove it" for key in values if key not in fields]


def problems(values) -> list[str]:
  """Every inconsistency in the `model` section, each as a one-line message naming the fix."""
  unknown = unknown_keys(values)
  if unknown:
    return unknown
  cfg = TransformerConfig(**dict(values))
  out = []
  for name in ('vocab_size', 'vocab_pad_multiple', 'd_model', 'n_layers', 'n_heads', 'max_len'):
    if getattr(cfg, name) <= 0:
      out.append(f'model.{name}={getattr(cfg, name)} must be positive')
  choices = (('kind', KINDS), ('norm', NORMS), ('position', POSITIONS), ('mlp', MLPS),
             ('remat', REMAT_POLICIES), ('dtype', DTYPES), ('param_dtype', DTYPES),
             ('parameterization', PARAMETERIZATIONS), ('attention_impl', ATTENTION_IMPLS),
             ('matmul_impl', MATMUL_IMPLS))
  for name, allowed in choices:
    if getattr(cfg, name) not in allowed:
      out.append(f'model.{name}={getattr(cfg, name)!r} is not one of {", ".join(allowed)}')
  if cfg.n_heads > 0 and cfg.n_kv_heads and cfg.n_heads % cfg.n_kv_heads:
    out.append(f'model.n_kv_heads={cfg.n_kv_heads} must divide model.n_heads={cfg.n_heads}')
  if not cfg.head_dim and cfg.n_heads > 0 and cfg.d_model % cfg.n_heads:
    out.append(f'model.d_model={cfg.d_model} is not divisible by model.n_heads={cfg.n_heads}; '
               'change one or set model.head_dim')
  if cfg.position == 'rope' and (cfg.head_dim or cfg.d_model // max(cfg.n_heads, 1)) % 2:
    out.append('rotary positions need an even head dimension; change model.head_dim')
  if cfg.rope_scaling_factor != 1.0 and not (
      cfg.rope_scaling_factor > 0 and 0 < cfg.rope_low_freq_factor < cfg.rope_high_freq_factor
      and cfg.rope_original_max_len > 0):
    out.append('Llama 3 rope scaling needs model.rope_scaling_factor > 0, 0 < '
               'model.rope_low_freq_factor < model.rope_high_freq_factor and a positive '
               'model.rope_original_max_len')
  if cfg.attention_query_chunk < 0:
    out.append(f'model.attention_query_chunk={cfg.attention_query_chunk} must be >= 0 '
               '(0: no blocking)')
  if cfg.attention_cache_bytes < -1:
    out.append(f'model.attention_cache_bytes={cfg.attention_cache_bytes} must be -1 (auto), 0 '
               '(off) or a size in bytes')
  out += mup_problems(cfg)
  if cfg.attention_impl == 'cudnn' and cfg.dtype == 'float32':
    out.append('model.attention_impl=cudnn needs model.dtype=bfloat16 or float16 (cuDNN '
               'attention has no float32); change one')
  if not 0.0 <= cfg.dropout < 1.0:
    out.append(f'model.dropout={cfg.dropout} must be in [0, 1)')
  return out


def mup_problems(cfg: TransformerConfig) -> list[str]:
  """What is wrong with the muP settings (models/mup.py), each in one line naming the fix."""
  if cfg.parameterization != 'mup':
    return []
  out = []
  if cfg.mup_base_width <= 0:
    out.append(f'model.parameterization=mup needs model.mup_base_width > 0 (the d_model the '
               f'hyperparameters were tuned at), got {cfg.mup_base_width}; set it')
  if cfg.mup_base_head_dim < 0:
    out.append(f'model.mup_base_head_dim={cfg.mup_base_head_dim} must be >= 0 (0: derived)')
  if cfg.mup_zero_readout and cfg.tie_embeddings:
    out.append('model.mup_zero_readout would zero the tied embedding table; set '
               'model.tie_embeddings=False or model.mup_zero_readout=False')
  return out
