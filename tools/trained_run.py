"""`launch.py eval` and `launch.py sample`: a trained run's latest good checkpoint, evaluated or
continuing a prompt.

`load_run(run_dir)` reads the run's `config.json`, rebuilds its experiment (corpus, tokenizer,
mesh, model) and restores the newest checkpoint that restores cleanly, without writing anything
into the directory (a run may still be training in it).
"""

import copy
import dataclasses
import json
import math
import sys
from typing import Any

import jax
import numpy as np

from data.loader import open_split
from data.manifest import load_manifest
from data.prepare import prepare
from data.tokenizers import ByteTokenizer
from errors import UserError
from models.decoding import generate_batch
from storage import as_path
from tools.compress import quantized
from train import checkpoint, compile_cache
from train.config import validate
from train.evaluation import bits_per_byte, evaluate, stream_loss
from train.experiment import Experiment, build_experiment
from train.run_dir import load_run_config


@dataclasses.dataclass
class LoadedRun:
  exp: Experiment
  state: Any  # the TrainState of the checkpoint
  step: int


def load_run(run_dir, eval_batches: int | None = None, step: int | None = None) -> LoadedRun:
  """The run's experiment and its newest good checkpoint, or that of `step` (UserError if it
  has none)."""
  run_dir = as_path(run_dir)  # local or gs://
  if not run_dir.is_dir():
    raise UserError(f'{run_dir} is not a run directory; pass the --run_dir of a training run')
  config = load_run_config(run_dir)
  if config.task.name != 'lm':  # bits/byte and sampling are a decoder language model's
    raise UserError(f'{run_dir} trained task.name={config.task.name!r}; eval and sample take a '
                    'language model run (a classifier: train.classify.predict)')
  if eval_batches is not None:
    if eval_batches < 1:
      raise UserError(f'--eval_batches={eval_batches} must be at least 1')
    config.train.eval_batches = eval_batches
  validate(config)
  compile_cache.enable(config.train.compile_cache_dir)  # eval, sample, serve: as the run did
  exp = build_experiment(config, progress=False)
  directory = checkpoint.checkpoint_dir(run_dir)
  if step is not None:
    with exp.mesh_context():
      return LoadedRun(exp=exp, state=checkpoint.restore_step(directory, step,
                                                              exp.abstract_state), step=step)
  with exp.mesh_context():
    state, step, message = checkpoint.restore_latest(directory, exp.abstract_state)
  if state is None:
    raise UserError(f'{run_dir} has no checkpoint yet; train it first (launch.py train '
                    f'--run_dir {run_dir})')
  if message and jax.process_index() == 0:
    print(message.replace('resumed from', 'using'), file=sys.stderr)
  return LoadedRun(exp=exp, state=state, step=step)


def evaluate_run(run_dir, eval_batches: int | None = None, data: str | None = None,
                 tokens: str | None = None, step: int | None = None,
                 as_json: bool = False, quantize: str | None = None) -> int:
  """`launch.py eval`: the loss, perplexity and bits/byte of the run's latest good checkpoint
  (or of `step`) on its validation split: the fixed evaluation batches the training logs, or
  its first `tokens` tokens ('all': every one); or on every token of the corpus `data`
  (config.data.source's forms) tokenized with the run's tokenizer (or its first `tokens`)."""
  limit = parse_token_limit(tokens)
  if eval_batches is not None and (tokens is not None or data is not None):
    raise UserError('--eval_batches counts batches of the validation split; drop it when '
                    'passing --tokens or --data')
  run = quantized(load_run(run_dir, eval_batches, step), quantize)  # tools/compress.py
  exp = run.exp
  if data is None:
    counts = exp.corpus.manifest['splits']['validation']
    stream, where = exp.corpus.validation_tokens, 'validation'
  else:
    stream, counts = corpus_tokens(exp, data)
    where = str(data)
  seq_len, rows = exp.config.data.seq_len, exp.config.train.batch_size
  with exp.mesh_context():
    if data is None and tokens is None:
      loss = evaluate(exp, run.state.params)
      n_tokens = exp.config.train.eval_batches * rows * seq_len
    else:
      stream = stream if limit is None else stream[:limit + 1]
      if stream.size < 2:
        raise UserError(f'{where} has {stream.size} token(s); evaluating needs at least 2')
      loss = stream_loss(exp.model, run.state.params, stream, seq_len, rows)
      n_tokens = stream.size - 1
  bpb = bits_per_byte(loss, counts)
  result = {'step': run.step, 'data': where, 'quantize': quantize or 'none', 'tokens': int(n_tokens), 'loss': loss,
            'perplexity': math.exp(loss), 'bits_per_byte': bpb,
            'bytes_per_token': counts['bytes'] / max(counts['tokens'], 1)}
  if as_json:
    print(json.dumps(result))
    return 0
  name = 'validation loss' if data is None else f'loss on {where}'
  baseline = ''
  if data is None:
    baseline = f" (unigram baseline {exp.corpus.manifest['unigram_bits_per_byte']:.3f} bits/byte)"
  print(f'step {run.step}: {name} {loss:.4f} nats/token, perplexity {math.exp(loss):.3f}, '
        f'{bpb:.3f} bits/byte over {n_tokens:,} tokens{baseline}')
  return 0


def parse_token_limit(tokens: str | None) -> int | None:
  """The count of --tokens, or None for 'all' (and when not given)."""
  if tokens is None or tokens == 'all':
    return None
  try:
    limit = int(tokens)
  except ValueError:
    limit = 0
  if limit < 1:
    raise UserError(f"--tokens={tokens} must be a positive number of tokens or 'all'")
  return limit


def corpus_tokens(exp, source: str):
  """All the tokens of `source` (its train and validation splits, in that order) tokenized with
  the run's tokenizer, prepared into the run's data.cache_dir (never into the run directory),
  and their token and byte counts."""
  data_cfg = copy.deepcopy(exp.config.data)
  data_cfg.source = source
  if not isinstance(exp.corpus.tokenizer, ByteTokenizer):
    data_cfg.tokenizer = str(exp.corpus.directory / 'tokenizer.json')
  directory = prepare(data_cfg)
  splits = load_manifest(directory)['splits']
  parts = [np.asarray(open_split(directory, split, data_cfg.mirror_dir))
           for split in ('train', 'validation')]
  counts = {key: splits['train'][key] + splits['validation'][key] for key in ('tokens', 'bytes')}
  return np.concatenate(parts), counts


def sample_run(run_dir, prompt: str | None, tokens: int, temperature: float | None,
               seed: int, prompts_file: str | None = None, top_k: int = 0,
               top_p: float = 1.0, quantize: str | None = None) -> int:
  """`launch.py sample`: prints at most `tokens` tokens generated by the run's latest good
  checkpoint after `prompt` (None: the run's train.sample_prompt, and its sample_temperature),
  or after each line of `prompts_file`, all decoded together as one batch."""
  prompts = sample_prompts(prompt, prompts_file)
  if tokens < 1 or (temperature is not None and temperature < 0):
    raise UserError('--tokens must be at least 1 and --temperature at least 0')
  if top_k < 0 or not 0.0 < top_p <= 1.0:
    raise UserError(f'--top_k={top_k} must be >= 0 (0: off) and --top_p={top_p} in (0, 1] '
                    '(1: off)')
  run = quantized(load_run(run_dir), quantize)  # tools/compress.py
  t = run.exp.config.train
  prompts = [t.sample_prompt] if prompts is None else prompts
  temperature = t.sample_temperature if temperature is None else temperature
  tokenizer = run.exp.corpus.tokenizer
  with run.exp.mesh_context():
    continuations = generate_batch(run.state.params, run.exp.model,
                                   [tokenizer.encode(p) for p in prompts], tokens, temperature,
                                   top_k, top_p, seed, tokenizer.eot_id)
  for i, (text, ids) in enumerate(zip(prompts, continuations)):
    if len(prompts) > 1:
      print(f'=== prompt {i + 1} of {len(prompts)} ===')
    print(text + tokenizer.decode(ids))
  return 0


def sample_prompts(prompt: str | None, prompts_file: str | None) -> list[str] | None:
  """The prompts of --prompts (one a line), [prompt], or None (the run's own prompt)."""
  if prompts_file is None:
    return None if prompt is None else [prompt]
  if prompt is not None:
    raise UserError('--prompt and --prompts both given; pass one of them')
  path = as_path(prompts_file)
  if not path.is_file():
    raise UserError(f'--prompts={prompts_file} is not a file; pass a text file with one prompt '
                    'a line')
  lines = path.read_text().splitlines()
  if not lines:
    raise UserError(f'--prompts={prompts_file} is empty; write one prompt a line')
  return lines
