"""Parameter counts and FLOPs against hand-computed values and against the initialised model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from models.config import TransformerConfig
from models.counting import flops_per_token, matmul_param_count, param_count
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
