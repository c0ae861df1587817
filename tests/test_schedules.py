"""Every learning-rate schedule at hand-picked steps, against closed-form values.

Convention under test (train/schedules.py): schedule(s) is the lr of the update at 0-based step
s, computed from n = s + 1, so warmup gives lr * n / W and the peak is reached at s = W - 1.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from configs.base import get_config
from train.schedules import make_schedule

PEAK = 2.0
FLOOR = 0.1 * PEAK  # min_lr_ratio = 0.1


def optim_config(**overrides) -> ml_collections.ConfigDict:
  cfg = get_config().optim
  cfg.update(dict(lr=PEAK, min_lr_ratio=0.1, warmup_steps=4, decay_steps=0), **overrides)
  return cfg


def lr_at(cfg: ml_collections.ConfigDict, step: int, total_steps: int = 24) -> float:
  return float(make_schedule(cfg, total_steps)(step))


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'linear', 'rsqrt', 'wsd'])
def test_warmup_is_linear_from_one_over_w_to_peak(schedule):
  cfg = optim_config(schedule=schedule)
  assert lr_at(cfg, 0) == pytest.approx(PEAK * 1 / 4)  # step 0 is not a zero-lr step
  assert lr_at(cfg, 1) == pytest.approx(PEAK * 2 / 4)
  assert lr_at(cfg, 3) == pytest.approx(PEAK)  # warmup ends at s = W - 1


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'linear', 'wsd'])
def test_no_warmup_starts_at_peak(schedule):
  assert lr_at(optim_config(schedule=schedule, warmup_steps=0), 0) == pytest.approx(PEAK)


def test_constant_stays_at_peak():
  cfg = optim_config(schedule='constant')
  for step in (4, 23, 1000):
    assert lr_at(cfg, step) == pytest.approx(PEAK)


def test_cosine_decays_to_floor_over_total_steps():
  cfg = optim_config(schedule='cosine')
  # W = 4, D = 24: progress p = (s + 1 - 4) / 20.
  assert lr_at(cfg, 8) == pytest.approx(FLOOR + (PEAK - FLOOR) * (1 + math.cos(math.pi / 4)) / 2)
  assert lr_at(cfg, 13) == pytest.approx((PEAK + FLOOR) / 2)  # p = 1/2
  assert lr_at(cfg, 23) == pytest.approx(FLOOR)  # last update of the run, p = 1
  assert lr_at(cfg, 500) == pytest.approx(FLOOR)


def test_cosine_uses_decay_steps_when_set():
  cfg = optim_config(schedule='cosine', decay_steps=14)
  # W = 4, D = 14: p = (s + 1 - 4) / 10.
  assert lr_at(cfg, 8) == pytest.approx((PEAK + FLOOR) / 2)  # p = 1/2
  assert lr_at(cfg, 13) == pytest.approx(FLOOR)
  assert lr_at(cfg, 20) == pytest.approx(FLOOR)  # constant after decay_steps


def test_linear_decays_to_floor():
  cfg = optim_config(schedule='linear')
  assert lr_at(cfg, 8) == pytest.approx(FLOOR + (PEAK - FLOOR) * 0.75)  # p = 1/4
  assert lr_at(cfg, 13) == pytest.approx((PEAK + FLOOR) / 2)  # p = 1/2
  assert lr_at(cfg, 23) == pytest.approx(FLOOR)
  assert lr_at(cfg, 99) == pytest.approx(FLOOR)


def test_rsqrt_after_warmup():
  cfg = optim_config(schedule='rsqrt')
  assert lr_at(cfg, 15) == pytest.approx(PEAK * math.sqrt(4 / 16))
  assert lr_at(cfg, 63) == pytest.approx(PEAK * math.sqrt(4 / 64))


def test_rsqrt_without_warmup_is_one_over_sqrt_n():
  cfg = optim_config(schedule='rsqrt', warmup_steps=0)
  assert lr_at(cfg, 0) == pytest.approx(PEAK)
  assert lr_at(cfg, 3) == pytest.approx(PEAK / 2)  # n = 4
  assert lr_at(cfg, 99) == pytest.approx(PEAK / 10)  # n = 100


def test_wsd_is_stable_then_decays_linearly_over_last_fraction():
  cfg = optim_config(schedule='wsd', decay_steps=20, wsd_decay_fraction=0.2)
  # D = 20: the last 0.2 * 20 = 4 updates (n = 17..20) decay from the peak to the floor.
  assert lr_at(cfg, 10) == pytest.approx(PEAK)
  assert lr_at(cfg, 15) == pytest.approx(PEAK)  # n = 16: decay not started
  assert lr_at(cfg, 16) == pytest.approx(PEAK - (PEAK - FLOOR) / 4)  # n = 17
  assert lr_at(cfg, 17) == pytest.approx((PEAK + FLOOR) / 2)  # n = 18, half way
  assert lr_at(cfg, 19) == pytest.approx(FLOOR)  # n = 20 = D
  assert lr_at(cfg, 40) == pytest.approx(FLOOR)


def test_schedule_is_jittable_on_an_int_step():
  schedule = make_schedule(optim_config(schedule='cosine'), 24)
  assert float(jax.jit(schedule)(jnp.int32(13))) == pytest.approx((PEAK + FLOOR) / 2)


def test_base_config_reaches_peak_at_end_of_warmup():
  optim = get_config().optim
  schedule = make_schedule(optim, 1000)
  assert float(schedule(optim.warmup_steps - 1)) == pytest.approx(optim.lr)
  assert float(schedule(999)) == pytest.approx(optim.lr * optim.min_lr_ratio)


def test_wsd_reaches_floor_when_decay_is_shorter_than_one_step():
  cfg = optim_config(schedule='wsd', warmup_steps=0, decay_steps=2, wsd_decay_fraction=0.2)
  assert lr_at(cfg, 0) == pytest.approx(PEAK)
  assert lr_at(cfg, 1) == pytest.approx(FLOOR)  # n = D = 2


@pytest.mark.parametrize('schedule', ['cosine', 'linear'])
def test_decay_shorter_than_warmup_drops_to_floor_after_warmup(schedule):
  cfg = optim_config(schedule=schedule, warmup_steps=4, decay_steps=2)
  assert lr_at(cfg, 3) == pytest.approx(PEAK)
  assert lr_at(cfg, 4) == pytest.approx(FLOOR)
