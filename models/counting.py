"""Parameter counts and training FLOPs per token of a Transformer, from its config alone.

Parameters: `param_count` (everything `init` creates), `embedding_param_count` (the vocabulary
tables, input and output, and a learned position table) and `non_embedding_param_count` (the
rest: the N of Kaplan et al. 2020 and of the model ladders).

Training FLOPs per token, three conventions (`training_flops_per_token(cfg, seq_len, name)`):
- '6n': 6 N, N = `matmul_param_count` (the parameters that take part in matrix multiplies: all
  but position tables, norms and biases; a tied embedding counts once, for the logits).
- '6n_attention': PaLM (Chowdhery et al. 2022, appendix B), 6 N + 12 L H Dh T, attention for full,
  non-causal attention; `flops_per_token` (what MFU uses). `causal_halved=True` halves that term.
- 'chinchilla': the per-layer count of Hoffmann et al. 2022, appendix F (see
  `chinchilla_forward_flops`), backward = 2 x forward, adapted to grouped-query attention (K and V
  projections for n_kv_heads heads) and to SwiGLU (three d_model x d_ff matrices, not two).
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


FLOPS_CONVENTIONS = ('6n', '6n_attention', 'chinchilla')
FLOPS_CONVENTION_NAMES = {
    '6n': '6N (N: parameters in matrix multiplies, logits included)',
    '6n_attention': '6N + 12 L H Dh T (PaLM appendix B, attention not halved)',
    'chinchilla': 'Chinchilla appendix F per-layer count (x3 for the backward pass)',
}


def embedding_param_count(cfg: TransformerConfig) -> int:
  """Vocabulary-sized tables (input embedding, untied output projection and its bias) and a
  learned position table: what Kaplan et al. leave out of N."""
  cfg = cfg.derived()
  count = cfg.padded_vocab * cfg.d_model * (1 if cfg.tie_embeddings else 2)
  if not cfg.tie_embeddings and cfg.use_bias:
    count += cfg.padded_vocab
  if cfg.position == 'learned':
    count += cfg.max_len * cfg.d_model
  return count


def non_embedding_param_count(cfg: TransformerConfig) -> int:
  """All parameters but the embeddings: blocks (with their norms and biases) and the final norm."""
  return param_count(cfg) - embedding_param_count(cfg)


def chinchilla_forward_flops(seq_len: int, vocab_size: int, d_model: int, n_layers: int,
                             n_heads: int, key_size: int, ffw_size: int, n_kv_heads: int = 0,
                             ffw_matrices: int = 2, embeddings_and_logits: bool = True) -> float:
  """Forward FLOPs of one sequence, Hoffmann et al. 2022 appendix F, term by term.

  embeddings 2 T V d; per layer: QKV 2*3 T d (Dk H), logits 2 T T (Dk H), softmax 3 H T T,
  softmax @ values 2 T T (Dk H), output projection 2 T (Dk H) d, dense block 2 T (d F + d F);
  final logits 2 T d V; total = embeddings + layers x (attention + dense) + logits.
  Adaptations: with n_kv_heads < n_heads (grouped-query attention) K and V project onto
  n_kv_heads heads, so QKV is 2 T d Dk (H + 2 Hkv); SwiGLU has `ffw_matrices=3` d x F matrices.
  `embeddings_and_logits=False` drops the first and last terms: the paper's Table A4 ratios are
  reproduced only that way (tests/test_counting.py).
  """
  t, hk = seq_len, key_size * n_heads
  kv_heads = n_kv_heads or n_heads
  qkv = 2 * t * d_model * key_size * (n_heads + 2 * kv_heads)
  logits = 2 * t * t * hk
  softmax = 3 * n_heads * t * t
  softmax_values = 2 * t * t * hk
  output = 2 * t * hk * d_model
  dense = 2 * t * ffw_matrices * d_model * ffw_size
  layers = n_layers * (qkv + logits + softmax + softmax_values + output + dense)
  if not embeddings_and_logits:
    return float(layers)
  return float(2 * t * vocab_size * d_model + layers + 2 * t * d_model * vocab_size)


def chinchilla_flops_per_token(cfg: TransformerConfig, seq_len: int) -> float:
  """Training FLOPs per token by appendix F (embeddings and logits counted, as the text says)."""
  cfg = cfg.derived()
  forward = chinchilla_forward_flops(
      seq_len, cfg.padded_vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.d_ff,
      cfg.n_kv_heads, 3 if cfg.mlp == 'swiglu' else 2)
  return 3 * forward / seq_len


def training_flops_per_token(cfg: TransformerConfig, seq_len: int, convention: str) -> float:
  """Training FLOPs per token by one of `FLOPS_CONVENTIONS`."""
  if convention == '6n':
    return 6.0 * matmul_param_count(cfg)
  if convention == '6n_attention':
    return float(flops_per_token(cfg, seq_len))
  if convention == 'chinchilla':
    return chinchilla_flops_per_token(cfg, seq_len)
  raise ValueError(f'unknown FLOPs convention {convention!r}; use one of {FLOPS_CONVENTIONS}')
