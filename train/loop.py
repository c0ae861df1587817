"""The training loop: the only place with side effects (metrics, progress, plots, samples).

It dispatches step N+1 before reading step N's metrics back to the host, evaluates on the
validation split every `train.eval_every` steps, stops early after `train.patience` evaluations
without improvement, and ends with a summary, a loss plot and a generated sample.
"""

import math
import time
from pathlib import Path

import jax
import numpy as np

from models.counting import flops_per_token
from train.hardware import measured_peak_flops
from train.metrics import MetricsWriter
from train.plots import plot_losses
from train.progress import Progress, format_seconds
from train.sample import generate
from train.setup import Experiment, build_experiment

LN2 = math.log(2.0)


def bits_per_byte(nats_per_token: float, split_counts: dict) -> float:
  """Converts a loss in nats/token to bits per UTF-8 byte of the split's text."""
  return nats_per_token / LN2 * split_counts['tokens'] / max(split_counts['bytes'], 1)


def evaluate(exp: Experiment, eval_fn, params) -> float:
  """Mean validation loss (nats/token) over the fixed evaluation batches."""
  losses = [eval_fn(params, batch) for batch in exp.eval_batches()]
  return float(np.mean(jax.device_get(losses)))


def write_run_config(run_dir: Path, config) -> None:
  (run_dir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')


class _EarlyStopping:
  def __init__(self, patience: int):
    self.patience, self.best, self.bad_evals = patience, math.inf, 0

  def should_stop(self, validation_loss: float) -> bool:
    if validation_loss < self.best:
      self.best, self.bad_evals = validation_loss, 0
    else:
      self.bad_evals += 1
    return self.patience > 0 and self.bad_evals >= self.patience


def train(config, run_dir: Path, progress_enabled: bool = True) -> dict:
  """Trains per `config`, writing everything into `run_dir`; returns the summary dict."""
  is_main = jax.process_index() == 0
  exp = build_experiment(config, progress=progress_enabled)
  run_dir.mkdir(parents=True, exist_ok=True)
  if is_main:
    write_run_config(run_dir, config)
  t = config.train
  writer = MetricsWriter(run_dir, enabled=is_main)
  tokens_per_step = t.batch_size * config.data.seq_len
  flops_per_step = flops_per_token(exp.model_cfg, config.data.seq_len) * tokens_per_step
  peak_flops = measured_peak_flops() * jax.device_count()

  with exp.mesh_context():
    state, shardings = exp.init_state()
    train_fn = exp.jit_train_step(shardings)
    eval_fn = exp.jit_eval_step(shardings)
    start_step = int(state.step)
    progress = Progress(start_step, t.steps, t.log_every, enabled=progress_enabled and is_main)
    early = _EarlyStopping(t.patience)
    run_start = time.perf_counter()
    timed_start, timed_steps = None, 0  # throughput excludes the first (compiling) step
    pending, last_loss, validation_loss = None, math.nan, math.nan

    def report(step, metrics):
      nonlocal last_loss, timed_start, timed_steps
      metrics = jax.device_get(metrics)
      last_loss = float(metrics['loss'])
      if timed_start is None:
        timed_start = time.perf_counter()
      else:
        timed_steps += 1
      elapsed = time.perf_counter() - timed_start
      tokens_per_s = timed_steps * tokens_per_step / elapsed if timed_steps else 0.0
      mfu = tokens_per_s / tokens_per_step * flops_per_step / peak_flops
      progress.update(step, last_loss, tokens_per_s, mfu)
      if (step + 1) % t.log_every == 0:
        writer.write('train', step + 1, {**metrics, 'tokens_per_s': tokens_per_s, 'mfu': mfu})
      return tokens_per_s, mfu

    tokens_per_s = mfu = 0.0
    for step in range(start_step, t.steps):
      state, metrics = train_fn(state, exp.train_batch(step))
      if pending is not None:
        tokens_per_s, mfu = report(*pending)
      pending = (step, metrics)
      is_eval_step = t.eval_every and (step + 1) % t.eval_every == 0 and step + 1 < t.steps
      if is_eval_step:
        tokens_per_s, mfu = report(*pending)
        pending = None
        validation_loss = evaluate(exp, eval_fn, state.params)
        writer.write('eval', step + 1, {'loss': validation_loss})
        progress.message(f'step {step + 1}: validation loss {validation_loss:.4f} nats/token')
        if early.should_stop(validation_loss):
          progress.message(f'early stopping: no improvement in {t.patience} evaluations')
          break
    if pending is not None:
      tokens_per_s, mfu = report(*pending)
    final_step = int(state.step)
    validation_loss = evaluate(exp, eval_fn, state.params)
    writer.write('eval', final_step, {'loss': validation_loss})
    progress.close()

  wall = time.perf_counter() - run_start
  splits = exp.manifest['splits']
  summary = {
      'steps': final_step,
      'train_loss': last_loss,
      'validation_loss': validation_loss,
      'train_bits_per_byte': bits_per_byte(last_loss, splits['train']),
      'validation_bits_per_byte': bits_per_byte(validation_loss, splits['validation']),
      'unigram_bits_per_byte': exp.manifest['unigram_bits_per_byte'],
      'tokens_per_s': tokens_per_s,
      'mfu': mfu,
      'wall_s': wall,
      'skipped_steps': int(state.skipped_steps),
  }
  if t.sample_tokens:
    summary['sample'] = sample_text(exp, state.params, t.sample_prompt, t.sample_tokens,
                                    t.sample_temperature, config.seed)
  if is_main:
    writer.write('summary', final_step, {k: v for k, v in summary.items() if k != 'sample'})
    unigram_nats = exp.manifest['unigram_bits_per_byte'] * LN2 * (
        splits['validation']['bytes'] / max(splits['validation']['tokens'], 1))
    plot_losses(run_dir, baseline_nats=unigram_nats)
    if 'sample' in summary:
      (run_dir / 'sample.txt').write_text(summary['sample'])
  writer.close()
  return summary


def sample_text(exp: Experiment, params, prompt: str, n_tokens: int, temperature: float,
                seed: int) -> str:
  ids = generate(params, exp.model, exp.tokenizer.encode(prompt), n_tokens, temperature, seed,
                 window=exp.config.data.seq_len)
  return exp.tokenizer.decode(ids)


def format_summary(summary: dict, run_dir: Path) -> str:
  """The end-of-run report printed to the console."""
  lines = [
      f"finished {summary['steps']} steps in {format_seconds(summary['wall_s'])} "
      f"({summary['tokens_per_s']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}%)",
      f"train loss      {summary['train_loss']:.4f} nats/token  "
      f"{summary['train_bits_per_byte']:.3f} bits/byte",
      f"validation loss {summary['validation_loss']:.4f} nats/token  "
      f"{summary['validation_bits_per_byte']:.3f} bits/byte  "
      f"(unigram baseline {summary['unigram_bits_per_byte']:.3f} bits/byte)",
  ]
  if summary.get('skipped_steps'):
    lines.append(f"skipped {summary['skipped_steps']} steps with a non-finite loss or gradient")
  if 'sample' in summary:
    lines += ['sample:', '-' * 60, summary['sample'], '-' * 60]
  lines.append(f'run directory: {run_dir} (metrics.jsonl, tb/, loss.png, config.json)')
  return '\n'.join(lines)

