"""The model's own frozen, hashable configuration, with derived sizes filled in.

`configs/` hold ml_collections dicts for whole runs; the model only sees this dataclass, built
with `TransformerConfig.from_dict(config.model)`, so `models/` imports nothing else of ours.
"""

import dataclasses

NORMS = ('rmsnorm', 'layernorm')
POSITIONS = ('rope', 'learned')
MLPS = ('swiglu', 'gelu')
REMAT_POLICIES = ('none', 'full', 'dots', 'dots_no_batch')
DTYPES = ('float32', 'bfloat16', 'float16')


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and choices of a decoder-only Transformer. Zero means "derive the default"."""
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
  attention_query_chunk: int = 128
  mlp: str = 'swiglu'
  use_bias: bool = False
  tie_embeddings: bool = True
  dropout: float = 0.0
  init_std: float = 0.02
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  scan_layers: bool = False
  remat: str = 'none'

  @classmethod
  def from_dict(cls, values) -> 'TransformerConfig':
    """Builds from a mapping (e.g. `config.model`), deriving zero-valued sizes."""
    known = {f.name for f in dataclasses.fields(cls)}
    cfg = cls(**{k: v for k, v in dict(values).items() if k in known})
    return cfg.derived()

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

  def problems(self) -> list[str]:
    """Every inconsistency in the config, each as a one-line message naming the fix."""
    out = []
    for name in ('vocab_size', 'vocab_pad_multiple', 'd_model', 'n_layers', 'n_heads', 'max_len'):
      if getattr(self, name) <= 0:
        out.append(f'model.{name}={getattr(self, name)} must be positive')
    choices = (('norm', NORMS), ('position', POSITIONS), ('mlp', MLPS), ('remat', REMAT_POLICIES),
               ('dtype', DTYPES), ('param_dtype', DTYPES))
    for name, allowed in choices:
      if getattr(self, name) not in allowed:
        out.append(f'model.{name}={getattr(self, name)!r} is not one of {", ".join(allowed)}')
    if self.n_heads > 0 and self.n_kv_heads and self.n_heads % self.n_kv_heads:
      out.append(f'model.n_kv_heads={self.n_kv_heads} must divide model.n_heads={self.n_heads}')
    if not self.head_dim and self.n_heads > 0 and self.d_model % self.n_heads:
      out.append(f'model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; '
                 'change one or set model.head_dim')
    if self.position == 'rope' and (self.head_dim or self.d_model // max(self.n_heads, 1)) % 2:
      out.append('rotary positions need an even head dimension; change model.head_dim')
    if self.attention_query_chunk < 0:
      out.append(f'model.attention_query_chunk={self.attention_query_chunk} must be >= 0 '
                 '(0: no blocking)')
    if not 0.0 <= self.dropout < 1.0:
      out.append(f'model.dropout={self.dropout} must be in [0, 1)')
    return out
