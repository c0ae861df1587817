"""What `generate` and `serve` run: an engine loaded from a run directory.

`load_engine(run_dir, quantize)` gives a `CompletionEngine` for a language model: prompts in,
continuations out, decoded together with the KV-cache sampler (models/decoding.py), optionally
with int8 weights (tools/compress.py). Its batches are padded to a power of two rows ("batch
buckets", extra rows repeat the first prompt and are dropped), so a server that sees every
batch size from 1 to 16 compiles the decoder for 5 of them, not 16.

A classifier plugs in as a `ClassifierEngine(predict)`, where `predict(texts) -> [{'label':
..., ...}]` is the classifier's own `predict(run_dir, texts)` with the run directory bound:
`load_engine` returns one for a run whose config is a classifier (`classifier_predict`), and
`generate` and `serve` dispatch on `engine.kind` ('completion' or 'classification').
"""

import dataclasses
from typing import Callable

from errors import UserError
from models.decoding import generate_batch, next_power_of_two


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How to continue a prompt; the same options and defaults as `launch.py sample`."""
  max_tokens: int = 200
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0

  def problems(self, context_len: int) -> list[str]:
    found = []
    if not 1 <= self.max_tokens < context_len:
      found.append(f'max_tokens={self.max_tokens} must be in [1, {context_len - 1}] (the '
                   "model's context minus one)")
    if self.temperature < 0:
      found.append(f'temperature={self.temperature} must be >= 0 (0: greedy)')
    if self.top_k < 0:
      found.append(f'top_k={self.top_k} must be >= 0 (0: off)')
    if not 0.0 < self.top_p <= 1.0:
      found.append(f'top_p={self.top_p} must be in (0, 1] (1: off)')
    return found

  @property
  def batch_key(self) -> tuple:
    """Requests with the same key can share decode steps (max_tokens may differ)."""
    return (self.temperature, self.top_k, self.top_p, self.seed)


class CompletionEngine:
  """A language model's latest good checkpoint, continuing batches of prompts."""
  kind = 'completion'

  def __init__(self, run):
    self.run = run  # tools/trained_run.LoadedRun
    self.tokenizer = run.exp.corpus.tokenizer
    self.context_len = run.exp.model_cfg.max_len
    self.step = run.step

  def check(self, options: SamplingOptions) -> None:
    found = options.problems(self.context_len)
    if found:
      raise UserError(found[0])

  def complete(self, prompts: list[str], options: SamplingOptions,
               max_tokens: list[int] | None = None) -> list[str]:
    """The continuation of each prompt, decoded as one batch of a power-of-two rows; row i cut
    to `max_tokens[i]` tokens when given (all decoded to `options.max_tokens`)."""
    self.check(options)
    ids = [self.tokenizer.encode(p) for p in prompts]
    rows = next_power_of_two(len(ids))
    ids += [ids[0]] * (rows - len(ids))
    with self.run.exp.mesh_context():
      out = generate_batch(self.run.state.params, self.run.exp.model, ids, options.max_tokens,
                           options.temperature, options.top_k, options.top_p, options.seed,
                           self.tokenizer.eot_id)
    limits = max_tokens or [options.max_tokens] * len(prompts)
    return [self.tokenizer.decode(row[:limit]) for row, limit in zip(out, limits)]

  def describe(self) -> dict:
    return {'kind': self.kind, 'step': self.step, 'context_len': self.context_len}


class ClassifierEngine:
  """A classifier: `predict(texts) -> [{'label': ..., ...}, ...]`, one result per text."""
  kind = 'classification'

  def __init__(self, predict: Callable[[list[str]], list[dict]], step: int | None = None):
    self.predict, self.step = predict, step

  def classify(self, texts: list[str]) -> list[dict]:
    results = self.predict(list(texts))
    if len(results) != len(texts):
      raise RuntimeError(f'the classifier returned {len(results)} results for {len(texts)} texts')
    return results

  def describe(self) -> dict:
    return {'kind': self.kind, 'step': self.step}


def classifier_predict(config, run_dir) -> Callable[[list[str]], list[dict]] | None:
  """The classifier's predict with `run_dir` bound (loaded once), or None for a run that is not
  a classifier (task.name != 'classify')."""
  if 'task' not in config or config.task.name != 'classify':
    return None
  from train import classify  # pylint: disable=import-outside-toplevel
  loaded = classify.load_classifier(run_dir)

  def predict(texts: list[str]) -> list[dict]:
    labels, probabilities = classify.predict(run_dir, texts, loaded)
    return [{'label': label, 'probability': float(row.max())}
            for label, row in zip(labels, probabilities)]
  return predict


def load_engine(run_dir, quantize: str | None = None):
  """The engine of a run directory: its classifier's, or a CompletionEngine."""
  from tools.compress import quantized  # pylint: disable=import-outside-toplevel
  from tools.trained_run import load_run  # pylint: disable=import-outside-toplevel
  from train.run_dir import load_run_config  # pylint: disable=import-outside-toplevel
  predict = classifier_predict(load_run_config(run_dir), run_dir)
  if predict is not None:
    if quantize not in (None, 'none'):
      raise UserError('--quantize applies to language models; drop it for a classifier')
    return ClassifierEngine(predict)
  return CompletionEngine(quantized(load_run(run_dir), quantize))
