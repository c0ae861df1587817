"""The pure train and eval steps: `train_step(state, batch) -> (state, metrics)`.

A batch is int32 tokens [B, L+1]: inputs are tokens[:, :-1], targets tokens[:, 1:]. Gradient
accumulation splits the batch into micro-batches (interleaved rows, so each micro-batch stays
spread over every data-parallel device) and sums their gradients in a `lax.scan`.

What the batch is trained for is the `Objective` (train/objectives.py, from `config.task`): it
turns the whole batch into the model's examples (span corruption draws its noise from the state's
rng and the step) before the micro-batches are split, and gives their loss. Next-token
prediction, the default, goes through `loss_fn` below unchanged.

A step whose loss or gradient is not finite leaves params and optimizer state untouched and is
counted in `skipped_steps`. Two counts then differ, each with one meaning:
- `state.step` counts steps taken, applied or skipped: it is the data position (step N trains on
  batch N, so a bad batch is passed over, never retried) and seeds dropout;
- the optimizer counts updates applied, `state.step - state.skipped_steps`: the lr schedule and
  Adam's bias correction (both read optax's count inside `opt_state`) see a skipped step as if it
  had never happened, so warmup resumes where it stopped and the moments are corrected for the
  gradients they actually hold. The logged `lr` is the one this count gives, i.e. the lr applied
  by this step's update (for a skipped step, the lr it would have applied). A run with k skipped
  steps ends k updates short of the end of its schedule: its last update uses
  schedule(train.steps - 1 - k).

Two optional pieces: `penalty(params) -> (value, grads)` (the L1/L2 penalties of train/optim.py)
adds its gradient to the loss's (the logged `loss` stays the cross-entropy; `penalty` is logged
beside it), and `prune(new_params, old_params, step) -> params` (train/pruning.py) keeps pruned
weights at zero after the update and prunes further on its schedule.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from einops import rearrange

from models.quantize import dequantize_params
from models.transformer import Transformer
from train.objectives import Objective
from train.state import TrainState

LM = Objective()  # next-token prediction
EXAMPLES_STREAM = 1 << 30  # folded into the state's rng for the task's own randomness


def cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy in nats (float32)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)
  return jnp.mean(losses)


def loss_fn(params, model: Transformer, tokens_BxLp1: jax.Array, dropout_rng: jax.Array,
            deterministic: bool, objective: Objective = LM) -> jax.Array:
  params = dequantize_params(params)  # int8 params (models/quantize.py); float ones unchanged
  if objective.name != 'lm':
    return objective.loss(params, model, tokens_BxLp1, dropout_rng, deterministic)
  logits = model.apply({'params': params}, tokens_BxLp1[:, :-1], deterministic=deterministic,
                       rngs={'dropout': dropout_rng})
  return cross_entropy(logits, tokens_BxLp1[:, 1:])


def _split_microbatches(tokens_BxLp1, accum_steps: int):
  """[B, ...] -> [A, B/A, ...] (every array of a batch), micro-batch a holding rows a, a+A, ..."""
  return jax.tree.map(lambda rows: rearrange(rows, '(n a) ... -> a n ...', a=accum_steps),
                      tokens_BxLp1)


def loss_and_grads(params, model, tokens_BxLp1, dropout_rng, accum_steps: int,
                   objective: Objective = LM):
  """Mean loss and gradient over the batch, accumulated over `accum_steps` micro-batches."""
  deterministic = model.cfg.dropout == 0.0
  grad_fn = jax.value_and_grad(loss_fn)
  if accum_steps == 1:
    return grad_fn(params, model, tokens_BxLp1, dropout_rng, deterministic, objective)

  def accumulate(carry, micro):
    loss_sum, grad_sum, index = carry
    rng = jax.random.fold_in(dropout_rng, index)
    loss, grads = grad_fn(params, model, micro, rng, deterministic, objective)
    return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads), index + 1), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (loss_sum, grad_sum, _), _ = jax.lax.scan(
      accumulate, (jnp.zeros((), jnp.float32), zeros, 0),
      _split_microbatches(tokens_BxLp1, accum_steps))
  return loss_sum / accum_steps, jax.tree.map(lambda g: g / accum_steps, grad_sum)


def _apply_update(tx, grads, prune, step, params, opt_state):
  """(new params, new optimizer state) of one optimizer update (and pruning, if any)."""
  updates, new_opt_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  if prune is not None:
    new_params = prune(new_params, params, step)
  return new_params, new_opt_state


def train_step(state: TrainState, tokens_BxLp1: jax.Array, *, model: Transformer,
               tx: optax.GradientTransformation, schedule, accum_steps: int,
               objective: Objective = LM, penalty=None, prune=None):
  """One optimizer update. Returns the new state and scalar metrics."""
  dropout_rng = jax.random.fold_in(state.rng, state.step)
  applied_updates = state.step - state.skipped_steps  # optax's count: the schedule's position
  examples_rng = jax.random.fold_in(jax.random.fold_in(state.rng, EXAMPLES_STREAM), state.step)
  batch = objective.examples(tokens_BxLp1, examples_rng)
  loss, grads = loss_and_grads(state.params, model, batch, dropout_rng, accum_steps, objective)
  extra = {}
  if penalty is not None:
    extra['penalty'], penalty_grads = penalty(state.params)
    grads = jax.tree.map(jnp.add, grads, penalty_grads)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # A step that is not finite keeps params and optimizer state: a cond, not a where(finite, new,
  # old) after the update, which kept the old state live beside the new one and made XLA copy
  # the whole optimizer state every step (~4% of a gpt_byte step on a CPU).
  new_params, new_opt_state = jax.lax.cond(
      finite, functools.partial(_apply_update, tx, grads, prune, state.step),
      lambda params, opt_state: (params, opt_state), state.params, state.opt_state)
  new_state = state.replace(
      step=state.step + 1,
      params=new_params,
      opt_state=new_opt_state,
      skipped_steps=state.skipped_steps + jnp.where(finite, 0, 1).astype(jnp.int32))
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'lr': schedule(applied_updates),
             'finite': finite, 'skipped_steps': new_state.skipped_steps, **extra}
  return new_state, metrics


def eval_step(params, tokens_BxLp1: jax.Array, *, model: Transformer,
              objective: Objective = LM) -> jax.Array:
  """Mean validation loss (nats/token, or per text) of one batch, without dropout; span
  corruption draws the same noise for every evaluation."""
  batch = objective.examples(tokens_BxLp1, jax.random.PRNGKey(0))
  return loss_fn(params, model, batch, jax.random.PRNGKey(0), True, objective)
