"""Model ladders: shapes by the stated rule, counts checked by hand and against the model."""

import dataclasses
import math

import pytest

from errors import UserError
from experiments.ladder import ASPECT_TOLERANCE, COUNT_TOLERANCE, fit_shape, ladder, log_spaced
from models.config import TransformerConfig
from models.counting import embedding_param_count, non_embedding_param_count
from tests.test_counting import initialised_count

BASE = TransformerConfig(vocab_size=256, max_len=256)


def test_one_rung_by_hand():
  # 4 layers of width 64, one head of 64, SwiGLU d_ff = 8/3 * 64 rounded up to 64 = 192:
  # per layer 4 d^2 (attention) + 3 d d_ff (MLP) + 2 d (two RMSNorm scales); final norm d.
  per_layer = 4 * 64 * 64 + 3 * 64 * 192 + 2 * 64
  rung = fit_shape(BASE, 4 * per_layer + 64, aspect_ratio=16, head_dim=64)
  assert (rung.n_layers, rung.d_model, rung.n_heads, rung.d_ff) == (4, 64, 1, 192)
  assert rung.non_embedding_params == 4 * per_layer + 64 == 213_568
  assert rung.params == 213_568 + 256 * 64  # plus the tied embedding


def test_ladder_follows_the_rule_and_matches_the_model():
  rungs = ladder(BASE, 5, 2e5, 5e6, aspect_ratio=32, head_dim=64)
  assert [r.target for r in rungs] == pytest.approx(log_spaced(5, 2e5, 5e6))
  assert rungs[0].target == pytest.approx(2e5) and rungs[-1].target == pytest.approx(5e6)
  counts = [r.non_embedding_params for r in rungs]
  assert counts == sorted(counts)
  for r in rungs:
    assert r.d_model % 64 == 0 and r.n_heads * 64 == r.d_model
    assert abs(math.log(r.d_model / r.n_layers / 32)) <= math.log(ASPECT_TOLERANCE) + 1e-9
    assert abs(math.log(r.non_embedding_params / r.target)) <= math.log(COUNT_TOLERANCE)
    # The overrides, applied to the base model as a config would, give the same counts.
    cfg = TransformerConfig.from_dict({**dataclasses.asdict(BASE),
                                       **{k.split('.')[1]: v for k, v in r.overrides().items()}})
    assert non_embedding_param_count(cfg) == r.non_embedding_params
  small = TransformerConfig.from_dict({**dataclasses.asdict(BASE), **{
      k.split('.')[1]: v for k, v in rungs[0].overrides().items()}})
  assert initialised_count(small) - embedding_param_count(small) == rungs[0].non_embedding_params


def test_rule_prefers_the_aimed_aspect_ratio_among_close_counts():
  # Exhaustive check of the rule on a small target: no other shape in the aspect window with a
  # count within the tolerance has an aspect ratio nearer the aim.
  target, aim = 1.5e6, 32
  rung = fit_shape(BASE, target, aspect_ratio=aim, head_dim=32)
  def count(layers, width):
    cfg = TransformerConfig(**{**dataclasses.asdict(BASE), 'n_layers': layers, 'd_model': width,
                               'n_heads': width // 32, 'head_dim': 32})
    return non_embedding_param_count(cfg)
  best = abs(math.log(rung.d_model / rung.n_layers / aim))
  for layers in range(1, 20):
    for width in range(32, 640, 32):
      aspect_ok = abs(math.log(width / layers / aim)) <= math.log(ASPECT_TOLERANCE)
      close = abs(math.log(count(layers, width) / target)) <= math.log(COUNT_TOLERANCE)
      if aspect_ok and close:
        assert abs(math.log(width / layers / aim)) >= best - 1e-12


def test_too_fine_a_ladder_is_a_user_error():
  with pytest.raises(UserError, match='repeated shapes'):
    ladder(BASE, 10, 2e5, 2.2e5, aspect_ratio=32, head_dim=64)
  with pytest.raises(UserError):
    log_spaced(3, 5e6, 2e5)


def test_launch_info_shows_the_ladder(capsys):
  import launch
  assert launch.main(['info', '--ladder', '3', '--ladder_min', '2e5', '--ladder_max', '1e6']) == 0
  out = capsys.readouterr().out
  assert 'model ladder' in out and 'non-emb params' in out and 'chinchilla' in out
  assert len([l for l in out.splitlines() if l.strip().startswith(('2e+05', '4.47e+05', '1e+06'))]) == 3
