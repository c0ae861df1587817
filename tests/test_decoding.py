"""KV-cache decoding (models/decoding.py) against recomputing the whole sequence every step
(models/sampling.py), and the top-k / top-p filters against hand-computed cases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errors import UserError
from models.config import TransformerConfig
from models.decoding import filter_logits, generate_batch, next_power_of_two
from models.sampling import generate
from models.transformer import Transformer, init_params

PROMPTS = [np.array([3, 4, 5]), np.array([7]), np.arange(1, 12)]


def sharp_params(cfg):
  """Random parameters scaled up so the logits are far from ties (greedy tokens are stable)."""
  params = nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(1), cfg.max_len))
  return jax.tree.map(lambda x: x * 8, params)


@pytest.mark.slow
@pytest.mark.parametrize('overrides', [
    dict(),
    dict(n_kv_heads=1, position='learned', norm='layernorm', mlp='gelu', use_bias=True),
    dict(scan_layers=True, n_kv_heads=2, remat='full'),
])
def test_cached_greedy_tokens_equal_full_recompute_batched_and_alone(overrides):
  cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_len=32,
                          attention_query_chunk=8, **overrides).derived()
  model, params = Transformer(cfg), sharp_params(cfg)
  batched = generate_batch(params, model, PROMPTS, 12)
  for prompt, tokens in zip(PROMPTS, batched):
    recomputed = generate(params, model, prompt, 12, 0.0)[prompt.size:]
    np.testing.assert_array_equal(tokens, recomputed)
  alone = generate_batch(params, model, [PROMPTS[0]], 12)[0]
  np.testing.assert_array_equal(alone, batched[0])


def test_prefill_logits_match_the_full_forward_pass():
  cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                          max_len=32).derived()
  model, params = Transformer(cfg), sharp_params(cfg)
  from models.attention import DecodeSlots
  from models.decoding import empty_cache
  tokens_1x8 = jnp.arange(8, dtype=jnp.int32)[None] + 3
  full = model.apply({'params': params}, tokens_1x8)
  # The same tokens left-padded by 4 slots and fed 6 + 1 + 1 through the cache.
  padded_1x10 = jnp.concatenate([jnp.zeros((1, 4), jnp.int32), tokens_1x8[:, :6]], axis=1)
  start = jnp.array([4], jnp.int32)
  cache = empty_cache(model, 1, 16)
  prefill, cache = model.apply({'params': params}, padded_1x10, cache=cache,
                               slots=DecodeSlots(jnp.int32(0), start))
  np.testing.assert_allclose(prefill[0, 4:], full[0, :6], rtol=1e-4, atol=1e-4)
  for i in (6, 7):
    step, cache = model.apply({'params': params}, tokens_1x8[:, i:i + 1], cache=cache,
                              slots=DecodeSlots(jnp.int32(4 + i), start))
    np.testing.assert_allclose(step[0, 0], full[0, i], rtol=1e-4, atol=1e-4)


def test_end_of_text_stops_a_row_and_is_cut():
  cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_len=32).derived()
  model, params = Transformer(cfg), sharp_params(cfg)
  free = generate_batch(params, model, [PROMPTS[0]], 10)[0]
  eot = int(free[3])  # pretend the 4th greedy token is end-of-text
  first = int(np.flatnonzero(free == eot)[0])
  stopped = generate_batch(params, model, [PROMPTS[0]], 10, eot_id=eot)[0]
  np.testing.assert_array_equal(stopped, free[:first])


def test_top_k_keeps_the_k_largest_logits():
  logits = jnp.array([[1.0, 3.0, 2.0, 0.5]])
  kept = np.asarray(filter_logits(logits, 2, jnp.float32(1.0))) > -1e30
  assert kept.tolist() == [[False, True, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
  # probabilities 0.5, 0.25, 0.125, 0.125 (logits are log-probabilities)
  logits = jnp.log(jnp.array([[0.125, 0.5, 0.125, 0.25]]))
  kept = lambda p: (np.asarray(filter_logits(logits, 0, jnp.float32(p))) > -1e30).tolist()[0]
  assert kept(0.5) == [False, True, False, False]  # 0.5 alone reaches 0.5
  assert kept(0.6) == [False, True, False, True]  # 0.5 + 0.25 = 0.75 >= 0.6
  assert kept(0.1) == [False, True, False, False]  # the most likely token always stays
  assert kept(1.0) == [True, True, True, True]


def test_sampling_with_top_k_one_is_greedy_and_seeds_reproduce():
  cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_len=32).derived()
  model = Transformer(cfg)
  params = nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(1), cfg.max_len))
  greedy = generate_batch(params, model, PROMPTS, 8)
  top1 = generate_batch(params, model, PROMPTS, 8, temperature=1.0, top_k=1, seed=3)
  for a, b in zip(greedy, top1):
    np.testing.assert_array_equal(a, b)
  draw = lambda seed: generate_batch(params, model, PROMPTS, 8, temperature=1.0, seed=seed)
  np.testing.assert_array_equal(np.stack(draw(5)), np.stack(draw(5)))
  assert not np.array_equal(np.stack(draw(5)), np.stack(draw(6)))


def test_buckets_and_too_many_tokens():
  assert [next_power_of_two(n) for n in (1, 2, 3, 8, 9)] == [1, 2, 4, 8, 16]
  cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, max_len=16).derived()
  with pytest.raises(UserError, match='context of 16'):
    generate_batch(None, Transformer(cfg), PROMPTS, 16)
