"""T5's span corruption (train/span_corruption.py) against hand-computed examples and T5's rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errors import UserError
from train import span_corruption as sc
from train.objectives import check_vocabulary

VOCAB = 100  # sentinels count down from 99

# The example of the T5 paper (Raffel et al. 2020, figure 2), one id per word.
WORDS = 'Thank you for inviting me to your party last week'.split()


def _ids(words):
  return jnp.asarray([WORDS.index(w) + 1 for w in words], jnp.int32)


def test_the_papers_example():
  tokens = _ids(WORDS)
  noise = jnp.asarray([w in ('for', 'inviting', 'last') for w in WORDS])
  inputs = sc.replace_spans(tokens, noise, VOCAB - 1, 9)
  targets = sc.replace_spans(tokens, ~noise, VOCAB - 1, 6)
  x, y, z = 99, 98, 97
  # Thank you <X> me to your party <Y> week  /  <X> for inviting <Y> last <Z>
  assert inputs.tolist() == [1, 2, x, 5, 6, 7, 8, y, 10]
  assert targets.tolist() == [x, 3, 4, y, 9, z]


def test_corrupt_a_window_by_hand():
  """12 tokens at density 0.25 and mean span 1.5: 3 noise tokens in 2 spans, input 11 long,
  target 5 long; the window starts with a kept span and ends with a noise span (T5's masks)."""
  assert sc.span_counts(12, 0.25, 1.5) == (3, 2)
  assert sc.encoder_decoder_lengths(12, 0.25, 1.5) == (11, 5)
  tokens = jnp.arange(10, 22, dtype=jnp.int32)  # 10 11 ... 21
  noise = sc.mask_from_spans(jnp.asarray([4, 5]), jnp.asarray([1, 2]), 12)
  assert noise.astype(int).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1]
  example = sc.corrupt(tokens, noise, VOCAB, 0.25, 1.5)
  assert example['inputs'].tolist() == [10, 11, 12, 13, 99, 15, 16, 17, 18, 19, 98]
  assert example['targets'].tolist() == [99, 14, 98, 20, 21]
  assert example['decoder_inputs'].tolist() == [sc.DECODER_START_ID, 99, 14, 98, 20]
  assert example['weights'].tolist() == [1.0] * 5
  masked = sc.mask_spans(tokens, noise, VOCAB)  # the encoder-only variant
  assert masked['inputs'].tolist() == [10, 11, 12, 13, 99, 15, 16, 17, 18, 19, 99, 99]
  assert masked['targets'].tolist() == tokens.tolist()
  assert masked['weights'].tolist() == noise.astype(float).tolist()


def _runs(mask):
  """[(is_noise, length)] of the runs of a 0/1 sequence."""
  runs = []
  for value in np.asarray(mask).astype(int).tolist():
    if runs and runs[-1][0] == value:
      runs[-1][1] += 1
    else:
      runs.append([value, 1])
  return [tuple(r) for r in runs]


def test_noise_masks_follow_t5():
  """256 tokens at 0.15 and mean span 3: round(38.4) = 38 noise tokens in round(38/3) = 13
  spans, alternating with 13 kept spans, kept first; different keys, different masks."""
  noise_mask = jax.jit(sc.noise_mask, static_argnums=(0, 1, 2))
  masks = [np.asarray(noise_mask(256, 0.15, 3.0, jax.random.PRNGKey(seed))) for seed in range(5)]
  for mask in masks:
    runs = _runs(mask)
    assert int(mask.sum()) == 38
    assert len(runs) == 26 and runs[0][0] == 0 and runs[-1][0] == 1
  assert len({mask.tobytes() for mask in masks}) == 5


def test_segmentation_covers_every_item():
  lengths = sc.random_segmentation(38, 13, jax.random.PRNGKey(0))
  assert int(lengths.sum()) == 38 and int(lengths.min()) >= 1 and lengths.shape == (13,)


def test_batch_rows_get_their_own_noise_and_can_be_restored():
  """Putting each target span back in place of its sentinel gives the original window."""
  tokens = jax.random.randint(jax.random.PRNGKey(3), (4, 64), 0, VOCAB - 20)
  corrupt_batch = jax.jit(sc.corrupt_batch, static_argnums=(2, 3, 4, 5))
  batch = corrupt_batch(tokens, jax.random.PRNGKey(7), VOCAB, 0.15, 3.0, True)
  assert batch['inputs'].shape == (4, sc.encoder_decoder_lengths(64, 0.15, 3.0)[0])
  assert len({tuple(row) for row in np.asarray(batch['inputs'])}) == 4
  for row in range(4):
    spans, current = {}, None
    for t in np.asarray(batch['targets'][row]).tolist():
      if t >= VOCAB - 20:
        current = spans.setdefault(t, [])
      else:
        current.append(t)
    restored = []
    for t in np.asarray(batch['inputs'][row]).tolist():
      restored += spans[t] if t >= VOCAB - 20 else [t]
    assert restored == np.asarray(tokens[row]).tolist()


def test_too_small_a_vocabulary_is_one_line():
  from configs.base import get_config
  config = get_config()
  config.task.name, config.model.kind = 'span_corruption', 'encoder_decoder'
  config.data.seq_len, config.model.vocab_size = 256, 260
  with pytest.raises(UserError, match='vocab_size=269'):
    check_vocabulary(config, 256)
  config.model.vocab_size = 269
  check_vocabulary(config, 256)


@pytest.mark.slow
def test_an_encoder_decoder_trains_on_span_corruption(tmp_path, capsys):
  """`launch.py train` with task span_corruption: the loss per target token falls well below
  the uniform guess ln(vocab), and the summary speaks of target tokens, not bits/byte."""
  import json
  import math
  import launch
  from tests.tiny_run import tiny_flags, write_corpus
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  flags = tiny_flags(tmp_path, run_dir, task__name='span_corruption',
                     model__kind='encoder_decoder', model__vocab_size=258, train__steps=30,
                     optim__lr=3e-3)
  assert launch.main(['train'] + flags) == 0
  assert 'nats/target token' in capsys.readouterr().out
  summary = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()
             if '"summary"' in line][-1]
  assert summary['validation_loss'] < math.log(258) - 1.5
  assert 'validation_bits_per_byte' not in summary
