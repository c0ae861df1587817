"""What a run trains for (`config.task.name`), and the model it trains: one switch for the step.

  lm               next-token prediction with a decoder (model.kind='decoder'); the default;
  span_corruption  T5's span corruption (train/span_corruption.py) with an encoder-decoder, or
                   masked-span prediction with an encoder (model.kind='encoder');
  classify         a label per text (train/labelled.py) with models/classifier.py on an encoder
                   or a decoder.

Every batch the loop hands the step is int32 [B, L+1], whatever the task: token windows (lm,
span_corruption) or, for classify, L tokens padded with -1 followed by the label id (-1 for the
padding rows of the last evaluation batch). `Objective.examples` turns it into the model's
inputs and targets inside the jitted step, for the whole batch before it is split into
micro-batches (so gradient accumulation sees the same noise); `Objective.loss` is the mean loss
of a (micro-)batch, and `Objective.init_params` the model's parameters from shapes alone.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from errors import UserError
from models.classifier import Classifier
from models.config import TransformerConfig
from models.encoder_decoder import EncoderDecoder
from models.transformer import Transformer
from train import span_corruption

TASKS = ('lm', 'span_corruption', 'classify')
_KINDS_OF_TASK = {'lm': ('decoder',), 'span_corruption': ('encoder', 'encoder_decoder'),
                  'classify': ('encoder', 'decoder')}


@dataclasses.dataclass(frozen=True)
class Objective:
  """The task's part of the step (hashable: a static argument of the jitted step)."""
  name: str = 'lm'
  kind: str = 'decoder'  # model.kind
  vocab_size: int = 256  # model.vocab_size: sentinels count down from its top
  noise_density: float = 0.15
  mean_span_length: float = 3.0

  def examples(self, tokens_BxLp1: jax.Array, rng: jax.Array):
    """The model's inputs and targets of a whole batch (a dict; lm: the tokens as they are)."""
    if self.name == 'lm':
      return tokens_BxLp1
    if self.name == 'span_corruption':
      return span_corruption.corrupt_batch(
          tokens_BxLp1[:, :-1], rng, self.vocab_size, self.noise_density,
          self.mean_span_length, encoder_decoder=self.kind == 'encoder_decoder')
    tokens_BxL = tokens_BxLp1[:, :-1]
    return {'inputs': jnp.maximum(tokens_BxL, 0), 'mask': tokens_BxL >= 0,
            'labels': tokens_BxLp1[:, -1]}

  def model_inputs(self, batch) -> tuple:
    """The positional arguments of the model's __call__ for a batch of `examples`."""
    if self.name == 'lm':
      return (batch[:, :-1],)
    if self.name == 'classify':
      return batch['inputs'], batch['mask']
    if self.kind == 'encoder_decoder':
      return batch['inputs'], batch['decoder_inputs']
    return (batch['inputs'],)

  def loss(self, params, model: nn.Module, batch, dropout_rng: jax.Array,
           deterministic: bool) -> jax.Array:
    """Mean loss in nats: per target token (lm, span_corruption) or per labelled text."""
    logits = model.apply({'params': params}, *self.model_inputs(batch),
                         deterministic=deterministic, rngs={'dropout': dropout_rng})
    if self.name == 'lm':
      targets, weights = batch[:, 1:], None
    elif self.name == 'classify':
      targets, weights = jnp.maximum(batch['labels'], 0), batch['labels'] >= 0
    else:
      targets, weights = batch['targets'], batch['weights']
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if weights is None:
      return jnp.mean(losses)
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)

  def init_params(self, model: nn.Module, rng: jax.Array, seq_len: int):
    """Initial (boxed, logically annotated) parameters, from a batch of one window."""
    batch = self.examples(jnp.zeros((1, seq_len + 1), jnp.int32), jax.random.PRNGKey(0))
    return model.init({'params': rng}, *self.model_inputs(batch))['params']


def objective_of(config) -> Objective:
  task = config.task
  return Objective(name=task.name, kind=config.model.kind, vocab_size=config.model.vocab_size,
                   noise_density=task.noise_density, mean_span_length=task.mean_span_length)


def make_model(model_cfg: TransformerConfig, task, n_classes: int = 2) -> nn.Module:
  """The module `task` trains: Transformer, EncoderDecoder or Classifier (n_classes heads)."""
  if task.name == 'classify':
    return Classifier(model_cfg, n_classes, task.pooling)
  if model_cfg.kind == 'encoder_decoder':
    return EncoderDecoder(model_cfg)
  return Transformer(model_cfg)


def problems(config) -> list[str]:
  """The `task` section and its fit to the model, one line each (no data needed)."""
  task, kind = config.task, config.model.kind
  if task.name not in TASKS:
    return [f'task.name={task.name!r} is not one of {", ".join(TASKS)}']
  out = []
  if kind not in _KINDS_OF_TASK[task.name]:
    out.append(f'task.name={task.name!r} trains model.kind '
               f'{" or ".join(_KINDS_OF_TASK[task.name])}, not {kind!r}; set --config.model.kind')
  if not 0.0 < task.noise_density < 1.0:
    out.append(f'task.noise_density={task.noise_density} must be in (0, 1), e.g. 0.15')
  if task.mean_span_length < 1.0:
    out.append(f'task.mean_span_length={task.mean_span_length} must be at least 1, e.g. 3')
  if task.pooling not in ('mean', 'first', 'last'):
    out.append(f"task.pooling={task.pooling!r} is not one of mean, first, last")
  elif task.name == 'classify' and kind == 'decoder' and task.pooling == 'first':
    out.append('task.pooling=first on a causal decoder sees only the first token; use mean or '
               'last')
  if task.name == 'classify' and not task.label_field:
    out.append('task.label_field is empty; name the field (or Parquet column) holding the label')
  if task.name == 'classify' and config.train.init_from and not task.init_from:
    out.append('a classifier starts from a trained run with task.init_from (its backbone), not '
               'train.init_from; use --config.task.init_from')
  if task.init_from and config.train.init_from:
    out.append('task.init_from (a classifier backbone) and train.init_from (a whole model to '
               'fine-tune) are both set; keep one')
  if task.init_from and task.name != 'classify':
    out.append('task.init_from starts a classifier from a trained run; set task.name=classify '
               'or clear task.init_from')
  return out


def check_vocabulary(config, tokenizer_vocab: int) -> None:
  """UserError unless the model's vocabulary holds the tokenizer's ids and the task's sentinels."""
  task, vocab = config.task, config.model.vocab_size
  if task.name != 'span_corruption':
    return
  needed = tokenizer_vocab + span_corruption.sentinels_needed(
      config.data.seq_len, task.noise_density, task.mean_span_length)
  if vocab < needed:
    raise UserError(f'span corruption of {config.data.seq_len}-token windows needs '
                    f'{needed - tokenizer_vocab} sentinel ids above the tokenizer\'s '
                    f'{tokenizer_vocab}; set --config.model.vocab_size={needed} or more')
