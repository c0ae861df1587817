"""L1 and L2 penalties: the value and gradient of a hand-made case computed by hand, the same
gradient seen by one SGD step of the real train step, and bad values as one-line errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_config
from errors import UserError
from models.config import TransformerConfig
from models.transformer import Transformer, init_params
from train.optim import make_optimizer, make_penalty, penalty_and_grads, validate_optim_config
from train.schedules import make_schedule
from train.state import TrainState
from train.step import loss_fn, train_step

PARAMS = {'mlp': {'up': {'kernel': jnp.array([[1.0, -2.0], [0.0, 0.5]])}},
          'norm': {'scale': jnp.array([3.0, -1.0])}}


def test_penalty_value_and_gradient_by_hand():
  value, grads = penalty_and_grads(PARAMS, l1=0.1, l2=0.01)
  # 0.1 * (1 + 2 + 0 + 0.5) + 0.01 * (1 + 4 + 0 + 0.25); the norm scale is not penalised
  assert float(value) == pytest.approx(0.4025)
  # 0.1 * sign(w) + 2 * 0.01 * w; sign(0) = 0
  np.testing.assert_allclose(grads['mlp']['up']['kernel'], [[0.12, -0.14], [0.0, 0.11]],
                             rtol=1e-6)
  np.testing.assert_array_equal(grads['norm']['scale'], [0.0, 0.0])
  value, grads = penalty_and_grads(PARAMS, l1=0.1, l2=0.01, decay_norms_and_biases=True)
  assert float(value) == pytest.approx(0.4025 + 0.1 * 4 + 0.01 * 10)
  np.testing.assert_allclose(grads['norm']['scale'], [0.16, -0.12], rtol=1e-6)


def test_one_sgd_step_moves_by_the_loss_gradient_plus_the_penalty_gradient():
  config = get_config()
  o = config.optim
  o.name, o.lr, o.schedule, o.warmup_steps, o.clip_norm, o.weight_decay = (
      'sgd', 1.0, 'constant', 0, 0.0, 0.0)
  o.l1, o.l2 = 0.01, 0.05
  model_cfg = TransformerConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2,
                                max_len=8).derived()
  model = Transformer(model_cfg)
  params = nn.meta.unbox(init_params(model_cfg, jax.random.PRNGKey(0), 8))
  tx = make_optimizer(o, 10)
  state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1), skipped_steps=jnp.int32(0))
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 9), 0, 32)
  step = functools.partial(train_step, model=model, tx=tx, schedule=make_schedule(o, 10),
                           accum_steps=1, penalty=make_penalty(o))
  new_state, metrics = jax.jit(step)(state, tokens)
  ce_grads = jax.grad(loss_fn)(params, model, tokens, jax.random.PRNGKey(0), True)
  kernel = params['layer_0']['mlp']['up']['kernel']
  by_hand = ce_grads['layer_0']['mlp']['up']['kernel'] + 0.01 * np.sign(kernel) + 0.1 * kernel
  np.testing.assert_allclose(new_state.params['layer_0']['mlp']['up']['kernel'],
                             kernel - by_hand, atol=1e-6)
  scale = params['final_norm']['scale']  # not penalised: moved by the loss gradient alone
  np.testing.assert_allclose(new_state.params['final_norm']['scale'],
                             scale - ce_grads['final_norm']['scale'], atol=1e-6)
  matrices = [w for name, w in jax.tree_util.tree_flatten_with_path(params)[0]
              if str(name[-1].key) in ('kernel', 'embedding')]
  assert float(metrics['penalty']) == pytest.approx(
      sum(0.01 * np.abs(w).sum() + 0.05 * np.square(w).sum() for w in matrices), rel=1e-5)
  assert make_penalty(get_config().optim) is None  # off by default


def test_negative_penalties_are_one_line_errors():
  o = get_config().optim
  o.l2 = -0.1
  with pytest.raises(UserError, match='optim.l1=0.0 and optim.l2=-0.1 must be >= 0'):
    validate_optim_config(o)
