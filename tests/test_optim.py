"""Each optimizer against updates worked out by hand, plus weight decay, clipping and validation.

The problem is J(w) = (w1 - 2)^2 + (w2 - 3)^2 from w = [1, 2], so grad J = 2 * (w - [2, 3]) and
the first gradient is [-2, -2]. Expected values are plain Python arithmetic on the published
update rules, never optax, with a constant schedule and no clipping or weight decay unless the
test is about them.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs.base import get_config
from errors import UserError
from train.optim import beta2, decay_mask, make_optimizer, validate_optim_config

TARGET = (2.0, 3.0)
START = (1.0, 2.0)


def optim_config(**overrides) -> ml_collections.ConfigDict:
  cfg = get_config().optim
  plain = dict(schedule='constant', warmup_steps=0, clip_norm=0.0, weight_decay=0.0, lr=0.1)
  cfg.update(plain, **overrides)
  return cfg


def gradient(w: tuple[float, float]) -> tuple[float, float]:
  return tuple(2 * (wi - ti) for wi, ti in zip(w, TARGET))


def run(cfg: ml_collections.ConfigDict, params, grads_of, steps: int):
  """`steps` updates of make_optimizer(cfg) with gradients grads_of(params)."""
  tx = make_optimizer(cfg, total_steps=100)
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads_of(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


def descend(cfg: ml_collections.ConfigDict, steps: int) -> np.ndarray:
  """w after `steps` updates on J, w held as a single 1-D param."""
  grads_of = lambda p: {'w': 2 * (p['w'] - jnp.array(TARGET))}
  return np.asarray(run(cfg, {'w': jnp.array(START)}, grads_of, steps)['w'])


def test_sgd():
  lr = 0.1
  w1 = [w - lr * g for w, g in zip(START, gradient(START))]  # [1.2, 2.2]
  w2 = [w - lr * g for w, g in zip(w1, gradient(w1))]  # grad [-1.6, -1.6] -> [1.36, 2.36]
  np.testing.assert_allclose(descend(optim_config(name='sgd', lr=lr), 1), [1.2, 2.2], rtol=1e-6)
  np.testing.assert_allclose(descend(optim_config(name='sgd', lr=lr), 2), w2, rtol=1e-6)
  np.testing.assert_allclose(w2, [1.36, 2.36], rtol=1e-12)


def test_momentum_second_step_uses_heavy_ball_velocity():
  lr, mu = 0.1, 0.9
  g0 = gradient(START)  # [-2, -2]
  v0 = g0  # v = mu * 0 + g
  w1 = [w - lr * v for w, v in zip(START, v0)]  # [1.2, 2.2]
  g1 = gradient(w1)  # [-1.6, -1.6]
  v1 = [mu * v + g for v, g in zip(v0, g1)]  # -1.8 - 1.6 = -3.4
  w2 = [w - lr * v for w, v in zip(w1, v1)]  # [1.54, 2.54]
  cfg = optim_config(name='momentum', lr=lr, momentum=mu)
  np.testing.assert_allclose(descend(cfg, 1), w1, rtol=1e-6)
  np.testing.assert_allclose(descend(cfg, 2), w2, rtol=1e-6)
  np.testing.assert_allclose(w2, [1.54, 2.54], rtol=1e-12)


def test_nesterov_steps_along_gradient_plus_mu_times_velocity():
  lr, mu = 0.1, 0.9
  g0 = gradient(START)
  v0 = g0
  w1 = [w - lr * (g + mu * v) for w, g, v in zip(START, g0, v0)]  # -2 - 1.8 -> [1.38, 2.38]
  g1 = gradient(w1)  # [-1.24, -1.24]
  v1 = [mu * v + g for v, g in zip(v0, g1)]  # -3.04
  w2 = [w - lr * (g + mu * v) for w, g, v in zip(w1, g1, v1)]  # -3.976 -> [1.7776, 2.7776]
  cfg = optim_config(name='nesterov', lr=lr, momentum=mu)
  np.testing.assert_allclose(descend(cfg, 1), [1.38, 2.38], rtol=1e-6)
  np.testing.assert_allclose(descend(cfg, 2), w2, rtol=1e-6)
  np.testing.assert_allclose(w2, [1.7776, 2.7776], rtol=1e-12)


def adam_by_hand(lr: float, b1: float, b2: float, eps: float, steps: int) -> list[float]:
  w, m, v = list(START), [0.0, 0.0], [0.0, 0.0]
  for t in range(1, steps + 1):
    g = gradient(w)
    m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
    v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g)]
    m_hat = [mi / (1 - b1**t) for mi in m]
    v_hat = [vi / (1 - b2**t) for vi in v]
    w = [wi - lr * mh / (math.sqrt(vh) + eps) for wi, mh, vh in zip(w, m_hat, v_hat)]
  return w


@pytest.mark.parametrize('name', ['adam', 'adamw'])
def test_adam_first_step_moves_each_coordinate_by_lr(name):
  cfg = optim_config(name=name, lr=0.1, b1=0.9, b2=0.95, eps=1e-8)
  # Bias-corrected m_hat = g and v_hat = g^2, so the step is lr * |g| / (|g| + eps) ~ lr.
  first = [w + 0.1 * 2 / (2 + 1e-8) for w in START]
  np.testing.assert_allclose(descend(cfg, 1), first, rtol=1e-6)
  np.testing.assert_allclose(descend(cfg, 1), [1.1, 2.1], rtol=1e-6)
  np.testing.assert_allclose(descend(cfg, 2), adam_by_hand(0.1, 0.9, 0.95, 1e-8, 2), rtol=1e-6)


def test_lion_uses_sign_of_b1_interpolation_and_b2_for_the_moment():
  lr, b1, b2 = 1.5, 0.9, 0.95
  cfg = optim_config(name='lion', lr=lr, b1=b1, b2=b2)
  # Step 1: m = 0, sign(0.1 * [-2, -2]) = -1 -> w = [2.5, 3.5]; m = (1 - b2) * g = -0.1.
  w1 = [w + lr for w in START]
  m1 = (1 - b2) * -2
  # Step 2: g = 2 * ([2.5, 3.5] - [2, 3]) = [1, 1]; b1 * m + (1 - b1) * g = -0.09 + 0.1 > 0, so
  # w moves back by lr (the b2 average, -0.095 + 0.05, would have the other sign).
  direction = b1 * m1 + (1 - b1) * 1.0
  assert direction > 0 > b2 * m1 + (1 - b2) * 1.0
  w2 = [w - lr for w in w1]
  np.testing.assert_allclose(descend(cfg, 1), w1, rtol=1e-6)
  np.testing.assert_allclose(descend(cfg, 2), w2, rtol=1e-6)


def moment_after_one_step(cfg, field: str) -> np.ndarray:
  """The optimizer-state leaf named `field` (mu, nu) after one update from START."""
  tx = make_optimizer(cfg, total_steps=100)
  params = {'w': jnp.array(START)}
  _, state = tx.update({'w': jnp.array(gradient(START))}, tx.init(params), params)
  found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
           if getattr(path[-2], 'name', None) == field]
  assert len(found) == 1, state
  return np.asarray(found[0])


@pytest.mark.parametrize('name, field, expected_b2', [
    ('lion', 'mu', 0.99), ('adamw', 'nu', 0.95), ('adam', 'nu', 0.95)])
def test_b2_left_unset_is_the_optimizers_own_default(name, field, expected_b2):
  cfg = optim_config(name=name)
  assert cfg.b2 == 0.0  # configs/base.py leaves it unset
  assert beta2(cfg) == expected_b2
  g = np.array(gradient(START))  # [-2, -2]
  # One step from zero moments: lion's m = (1 - b2) g, Adam's v = (1 - b2) g^2.
  expected = (1 - expected_b2) * (g if field == 'mu' else g**2)
  np.testing.assert_allclose(moment_after_one_step(cfg, field), expected, rtol=1e-6)


def test_b2_set_explicitly_is_used_as_given():
  cfg = optim_config(name='lion', b2=0.9)
  assert beta2(cfg) == 0.9
  np.testing.assert_allclose(moment_after_one_step(cfg, 'mu'), [-0.2, -0.2], rtol=1e-6)


def test_adafactor_unfactored_vector():
  lr = 0.1
  cfg = optim_config(name='adafactor', lr=lr)
  # A 1-D param keeps a full second moment v. Its decay at 0-based step t is 1 - (t + 1)^-0.8,
  # so step 0 has v = g^2 (+1e-30) and the update is sign(g): w = [1.1, 2.1]. The rms of that
  # update is 1, which the block-rms clip (threshold 1) leaves alone.
  w1 = [w + lr for w in START]
  g0, g1 = -2.0, 2 * (w1[0] - TARGET[0])  # both coordinates share the same gradients
  decay = 1 - 2**-0.8
  v1 = decay * g0**2 + (1 - decay) * g1**2
  update = g1 / math.sqrt(v1)  # |update| < 1, so no clipping
  assert abs(update) < 1
  w2 = [w - lr * update for w in w1]
  np.testing.assert_allclose(descend(cfg, 1), w1, rtol=1e-6)
  np.testing.assert_allclose(descend(cfg, 2), w2, rtol=1e-6)


def test_adafactor_handles_a_factored_matrix():
  cfg = optim_config(name='adafactor', lr=0.1)
  params = {'kernel': jnp.ones((128, 128))}
  # Every gradient entry equal: row and column factors are equal, the update is sign(g).
  new = run(cfg, params, lambda p: {'kernel': jnp.full((128, 128), 3.0)}, 1)
  np.testing.assert_allclose(np.asarray(new['kernel']), 0.9, rtol=1e-5)


DECAYING = ['adamw', 'sgd', 'momentum', 'nesterov', 'lion', 'adafactor']


def zero_grads(params):
  return jax.tree.map(jnp.zeros_like, params)


@pytest.mark.parametrize('name', DECAYING)
def test_weight_decay_shrinks_matrices_but_not_vectors(name):
  lr, wd = 0.1, 0.5
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}}
  new = run(optim_config(name=name, lr=lr, weight_decay=wd), params, zero_grads, 1)
  # Zero gradients give a zero direction, leaving only the decay: w - lr * wd * w.
  np.testing.assert_allclose(np.asarray(new['dense']['kernel']), 1 - lr * wd, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new['dense']['bias']), 1.0, rtol=1e-6)


def test_decay_norms_and_biases_decays_vectors_too():
  params = {'kernel': jnp.ones((2, 2)), 'scale': jnp.ones((2,))}
  cfg = optim_config(name='adamw', lr=0.1, weight_decay=0.5, decay_norms_and_biases=True)
  new = run(cfg, params, zero_grads, 1)
  np.testing.assert_allclose(np.asarray(new['scale']), 0.95, rtol=1e-6)


def test_adam_ignores_weight_decay():
  params = {'kernel': jnp.ones((2, 2))}
  new = run(optim_config(name='adam', weight_decay=0.5), params, zero_grads, 1)
  np.testing.assert_allclose(np.asarray(new['kernel']), 1.0)


def test_momentum_weight_decay_is_decoupled_from_the_velocity():
  lr, wd = 0.1, 0.5
  cfg = optim_config(name='momentum', lr=lr, weight_decay=wd, momentum=0.9)
  new = run(cfg, {'kernel': jnp.ones((2, 2))}, zero_grads, 2)
  # The velocity stays 0, so each step only decays: (1 - lr * wd)^2 = 0.9025. Had wd * w gone
  # into the velocity, step 2 would move by lr * (0.9 * 0.5 + 0.5 * 0.95) to 0.8575.
  np.testing.assert_allclose(np.asarray(new['kernel']), (1 - lr * wd)**2, rtol=1e-6)


def test_decay_mask_goes_by_name_not_rank():
  params = {'embedding': jnp.ones((4, 3)),
            'layers': {'query': {'kernel': jnp.ones((2, 3, 2, 2)), 'bias': jnp.ones((2, 2, 2))},
                       'norm': {'scale': jnp.ones((2, 3))}}}
  assert decay_mask(params) == {'embedding': True, 'layers': {
      'query': {'kernel': True, 'bias': False}, 'norm': {'scale': False}}}
  assert decay_mask(params, decay_norms_and_biases=True)['layers']['norm']['scale']
  with pytest.raises(ValueError, match="layers/gamma: weight decay knows"):
    decay_mask({'layers': {'gamma': jnp.ones((3,))}})


def test_clipping_scales_a_norm_10_gradient_to_norm_1():
  params = {'a': jnp.zeros((1,)), 'b': jnp.zeros((1, 1))}
  big = {'a': jnp.array([6.0]), 'b': jnp.array([[8.0]])}  # global norm sqrt(36 + 64) = 10
  new = run(optim_config(name='sgd', lr=1.0, clip_norm=1.0), params, lambda p: big, 1)
  np.testing.assert_allclose(np.asarray(new['a']), [-0.6], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new['b']), [[-0.8]], rtol=1e-6)


def test_clipping_leaves_a_small_gradient_alone():
  params = {'a': jnp.zeros((2,))}
  small = {'a': jnp.array([0.3, 0.4])}  # norm 0.5
  new = run(optim_config(name='sgd', lr=1.0, clip_norm=1.0), params, lambda p: small, 1)
  np.testing.assert_allclose(np.asarray(new['a']), [-0.3, -0.4], rtol=1e-6)


def test_base_config_optimizer_runs_under_jit():
  cfg = get_config().optim
  tx = make_optimizer(cfg, total_steps=1000)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  state = tx.init(params)
  updates, _ = jax.jit(tx.update)(params, state, params)
  # Step 0 of the cosine warmup: lr = 1e-3 / 100; clipped unit-ish Adam step plus decay.
  assert np.all(np.isfinite(np.asarray(updates['kernel'])))
  assert float(jnp.max(jnp.abs(updates['kernel']))) < 2e-5


BAD_VALUES = [
    ('name', 'foo'), ('schedule', 'step'), ('lr', 0.0), ('lr', -1.0), ('weight_decay', -0.1),
    ('b1', 1.0), ('b1', -0.1), ('b2', 1.0), ('momentum', 1.0), ('eps', 0.0),
    ('warmup_steps', -1), ('decay_steps', -1), ('clip_norm', -1.0), ('min_lr_ratio', 1.5),
    ('min_lr_ratio', -0.1), ('wsd_decay_fraction', 0.0), ('wsd_decay_fraction', 1.5),
]


@pytest.mark.parametrize('key,value', BAD_VALUES)
def test_bad_values_raise_one_line_user_error(key, value):
  cfg = optim_config(**{key: value})
  with pytest.raises(UserError, match=f'optim.{key}=') as raised:
    validate_optim_config(cfg)
  assert '\n' not in str(raised.value)
  with pytest.raises(UserError):
    make_optimizer(cfg, total_steps=10)


def test_unknown_name_lists_the_choices():
  with pytest.raises(UserError, match="optim.name='foo' is not one of adamw, adam, .*; pick one"):
    validate_optim_config(optim_config(name='foo'))


def test_edge_values_are_accepted():
  validate_optim_config(optim_config(min_lr_ratio=0.0, wsd_decay_fraction=1.0, b1=0.0,
                                     clip_norm=0.0, warmup_steps=0))


def test_every_optim_problem_is_reported():
  """`problems` lists every bad value of the section, not only the first."""
  from train.optim import problems
  found = problems(optim_config(lr=0.0, b1=1.5, eps=0.0))
  assert len(found) == 3
  assert found[0].startswith('optim.lr=0.0') and found[1].startswith('optim.b1=1.5')
  assert found[2].startswith('optim.eps=0.0')
