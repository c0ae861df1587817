"""Parameter count and training FLOPs per token of a Transformer, from its config alone.

FLOPs follow PaLM (Chowdhery et al. 2022, appendix B): 6 N + 12 L H Dh T per token, where N
counts the parameters that take part in matrix multiplies (all but position tables, norms and
biases; a tied embedding counts once, for the logits) and the attention term is for full,
non-causal attention. `causal_halved=True` halves the attention term for causal masking.
"""

from models.config import TransformerConfig


def _layer_matmul_params(cfg: TransformerConfig) -> int:
  d, h, k, dh, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
  attention = d * h * dh + 2 * d * k * dh + h * dh * d
  mlp = (3 if cfg.mlp == 'swiglu' else 2) * d * f
  return attention + mlp


def _layer_vector_params(cfg: TransformerConfig) -> int:
  """Norm scales/biases and projection biases of one block."""
  d, h, k, dh, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
  norms = 2 * d * (2 if cfg.norm == 'layernorm' and cfg.use_bias else 1)
  if not cfg.use_bias:
    return norms
  attention = h * dh + 2 * k * dh + d
  mlp = (2 if cfg.mlp == 'swiglu' else 1) * f + d
  return norms + attention + mlp


def matmul_param_count(cfg: TransformerConfig) -> int:
  """Parameters used in matrix multiplies: blocks plus the logits projection."""
  cfg = cfg.derived()
  return cfg.n_layers * _layer_matmul_params(cfg) + cfg.padded_vocab * cfg.d_model


def param_count(cfg: TransformerConfig) -> int:
  """All trainable parameters, as `init` creates them."""
  cfg = cfg.derived()
  d = cfg.d_model
  embeddings = cfg.padded_vocab * d * (1 if cfg.tie_embeddings else 2)
  if not cfg.tie_embeddings and cfg.use_bias:
    embeddings += cfg.padded_vocab  # lm_head bias
  positions = cfg.max_len * d if cfg.position == 'learned' else 0
  final_norm = d * (2 if cfg.norm == 'layernorm' and cfg.use_bias else 1)
  blocks = cfg.n_layers * (_layer_matmul_params(cfg) + _layer_vector_params(cfg))
  return embeddings + positions + blocks + final_norm


def flops_per_token(cfg: TransformerConfig, seq_len: int, causal_halved: bool = False) -> float:
  """Training (forward + backward) FLOPs per token, PaLM convention."""
  cfg = cfg.derived()
  attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
  if causal_halved:
    attention /= 2
  return 6 * matmul_param_count(cfg) + attention
