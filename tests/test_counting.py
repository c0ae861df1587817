"""Parameter counts and FLOPs against hand-computed values and against the initialised model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from models.config import TransformerConfig
from models.counting import (FLOPS_CONVENTIONS, chinchilla_flops_per_token,
                             chinchilla_forward_flops, embedding_param_count, flops_per_token,
                             matmul_param_count, non_embedding_param_count, param_count,
                             training_flops_per_token)
from models.transformer import Transformer

GPT2_SMALL = TransformerConfig(vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                               max_len=1024, norm='layernorm', position='learned', mlp='gelu',
                               use_bias=True, tie_embeddings=True)
LLAMA2_7B = TransformerConfig(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                              max_len=4096, tie_embeddings=False)


def initialised_count(cfg: TransformerConfig) -> int:
  shapes = jax.eval_shape(lambda: Transformer(cfg.derived()).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes['params'])))


def test_gpt2_small_parameter_count_by_hand():
  d, v, ctx, layers = 768, 50257, 1024, 12
  per_layer = (2 * d  # ln_1
               + d * 3 * d + 3 * d  # c_attn
               + d * d + d  # attn c_proj
               + 2 * d  # ln_2
               + d * 4 * d + 4 * d  # mlp c_fc
               + 4 * d * d + d)  # mlp c_proj
  expected = v * d + ctx * d + layers * per_layer + 2 * d
  assert expected == 124_439_808
  assert param_count(GPT2_SMALL) == expected
  assert initialised_count(GPT2_SMALL) == expected


def test_llama2_7b_parameter_count_by_hand():
  d, v, f, layers = 4096, 32000, 11008, 32
  per_layer = 4 * d * d + 3 * d * f + 2 * d  # q,k,v,o + gate,up,down + two RMSNorm scales
  expected = 2 * v * d + layers * per_layer + d
  assert expected == 6_738_415_616
  assert param_count(LLAMA2_7B) == expected


@pytest.mark.parametrize('overrides', [
    dict(),
    dict(n_kv_heads=1, mlp='gelu', tie_embeddings=False),
    dict(n_kv_heads=2, use_bias=True, norm='layernorm', position='learned'),
    dict(scan_layers=True, remat='full', use_bias=True),
])
def test_analytic_count_matches_initialised_model(overrides):
  cfg = TransformerConfig(vocab_size=300, d_model=64, n_layers=3, n_heads=4, max_len=32,
                          **overrides)
  assert param_count(cfg) == initialised_count(cfg)


def test_flops_per_token_gpt2_small_by_hand():
  # Matmul parameters: everything but the position table, 25 LayerNorms and the biases.
  biases = 12 * (3 * 768 + 768 + 4 * 768 + 768)
  norms = 25 * 2 * 768
  n_matmul = 124_439_808 - 1024 * 768 - norms - biases
  assert matmul_param_count(GPT2_SMALL) == n_matmul == 123_532_032
  attention = 12 * 12 * 12 * 64 * 1024  # 12 L H Dh T
  assert flops_per_token(GPT2_SMALL, 1024) == 6 * n_matmul + attention == 854_438_400
  assert flops_per_token(GPT2_SMALL, 1024, causal_halved=True) == 6 * n_matmul + attention / 2


def test_flops_per_token_small_llama_by_hand():
  cfg = TransformerConfig(vocab_size=256, d_model=256, n_layers=4, n_heads=4)  # d_ff -> 704
  n_matmul = 4 * (4 * 256 * 256 + 3 * 256 * 704) + 256 * 256
  assert flops_per_token(cfg, 256) == 6 * n_matmul + 12 * 4 * 4 * 64 * 256


def test_embedding_and_non_embedding_counts_by_hand():
  # GPT-2 small: token table 50257 x 768 and position table 1024 x 768; the rest is the
  # 85M "non-embedding" parameters Kaplan et al. quote for it.
  assert embedding_param_count(GPT2_SMALL) == 50257 * 768 + 1024 * 768
  assert non_embedding_param_count(GPT2_SMALL) == 85_056_000
  # Llama-2 7B: untied input and output tables, RoPE (no position table).
  assert embedding_param_count(LLAMA2_7B) == 2 * 32000 * 4096
  assert non_embedding_param_count(LLAMA2_7B) == 6_738_415_616 - 2 * 32000 * 4096


def test_training_flops_conventions_by_hand():
  cfg = TransformerConfig(vocab_size=256, d_model=256, n_layers=4, n_heads=4)  # d_ff 704
  n_matmul = 4 * (4 * 256 * 256 + 3 * 256 * 704) + 256 * 256
  assert training_flops_per_token(cfg, 256, '6n') == 6 * n_matmul
  assert training_flops_per_token(cfg, 256, '6n_attention') == flops_per_token(cfg, 256)
  with pytest.raises(ValueError):
    training_flops_per_token(cfg, 256, 'kaplan')
  assert set(FLOPS_CONVENTIONS) == {'6n', '6n_attention', 'chinchilla'}


def test_chinchilla_flops_per_token_by_hand_with_gqa_and_swiglu():
  # d 64, 2 layers, 4 query heads of 16, 2 KV heads, SwiGLU d_ff 192, vocab 100, T 32.
  cfg = TransformerConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                          d_ff=192, max_len=32)
  t, d, v = 32, 64, 100
  embeddings = 2 * t * v * d
  qkv = 2 * t * d * 16 * (4 + 2 + 2)  # Q for 4 heads, K and V for 2
  logits = 2 * t * t * 64
  softmax = 3 * 4 * t * t
  values = 2 * t * t * 64
  out = 2 * t * 64 * d
  dense = 2 * t * 3 * d * 192  # gate, up and down
  final = 2 * t * d * v
  forward = embeddings + 2 * (qkv + logits + softmax + values + out + dense) + final
  assert chinchilla_flops_per_token(cfg, t) == 3 * forward / t
  assert training_flops_per_token(cfg, t, 'chinchilla') == 3 * forward / t


def test_chinchilla_formula_with_multi_head_attention_matches_the_papers_terms():
  # With H = Hkv and two dense matrices the QKV term is the paper's 2*3*T*d*(Dk*H).
  t, v, d, layers, heads, dk, f = 2048, 32000, 640, 10, 10, 64, 2560
  paper = (2 * t * v * d
           + layers * (2 * 3 * t * d * (dk * heads) + 2 * t * t * (dk * heads)
                       + 3 * heads * t * t + 2 * t * t * (dk * heads) + 2 * t * (dk * heads) * d
                       + 2 * t * (d * f + d * f))
           + 2 * t * d * v)
  assert chinchilla_forward_flops(t, v, d, layers, heads, dk, f) == paper


# Hoffmann et al. 2022, Table A4: (num_layers, d_model, ffw_size, num_heads, key_size,
# FLOP ratio ours / 6ND), sequence length 2048, vocabulary 32,000.
CHINCHILLA_TABLE_A4 = [(10, 640, 2560, 10, 64, 1.03), (20, 1024, 4096, 16, 64, 1.10),
                       (24, 1280, 5120, 10, 128, 1.08), (26, 1792, 7168, 14, 128, 1.04),
                       (28, 2048, 8192, 16, 128, 1.03), (40, 3584, 14336, 28, 128, 0.99)]


def _gopher_family_params(layers: int, d: int, ffw: int, vocab: int) -> int:
  """Parameters of the Gopher/Chinchilla architecture without the input embedding: per layer
  Q, K, V, output (4 d^2 + 4 d biases), relative-position projection and its two biases
  (d^2 + 2 d), MLP (2 d F + F + d), two LayerNorms (4 d); final LayerNorm; output projection."""
  per_layer = 4 * d * d + 4 * d + d * d + 2 * d + 2 * d * ffw + ffw + d + 4 * d
  return layers * per_layer + 2 * d + d * vocab


@pytest.mark.parametrize('layers, d, ffw, heads, key_size, ratio', CHINCHILLA_TABLE_A4)
def test_chinchilla_flops_reproduce_table_a4_ratio_to_6nd(layers, d, ffw, heads, key_size, ratio):
  # Table A4 is reproduced (to the two decimals printed) when the appendix F count leaves out the
  # embedding and logits terms, as karpathy/nanoGPT's scaling_laws.ipynb found and attributes to
  # the authors; counted as the text writes them, the 73M model's ratio would be about 1.6.
  n = _gopher_family_params(layers, d, ffw, 32000)
  core = chinchilla_forward_flops(2048, 32000, d, layers, heads, key_size, ffw,
                                  embeddings_and_logits=False)
  assert abs(3 * core / 2048 / (6 * n) - ratio) < 0.006
  full = chinchilla_forward_flops(2048, 32000, d, layers, heads, key_size, ffw)
  assert full > core


def test_chinchilla_count_against_palm_and_6n():
  # Llama-2 7B at its 4096 context: appendix F and PaLM's 6N + attention agree to 2% (both count
  # attention; appendix F adds embeddings, softmax and unhalved K/V terms); 6N alone is 18% low.
  chinchilla = chinchilla_flops_per_token(LLAMA2_7B, 4096)
  assert 1.0 < chinchilla / flops_per_token(LLAMA2_7B, 4096) < 1.02
  assert 1.15 < chinchilla / training_flops_per_token(LLAMA2_7B, 4096, '6n') < 1.2
  # A tiny CPU model: attention dominates, 6N undercounts by two thirds.
  tiny = TransformerConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=2)
  assert chinchilla_flops_per_token(tiny, 256) / training_flops_per_token(tiny, 256, '6n') > 1.6
