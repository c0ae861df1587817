"""`launch.py generate`: every record of a JSON Lines file through a run's engine, in batches,
into another JSON Lines file; resumable.

Each output line is its input record with the result added: `completion` for a language model
(the prompt read from `--field`, default 'prompt'), `label` and whatever else the classifier's
predict returns for a classifier (the text read from `--field`, default 'text'). Line i of the
output is record i of the input.

Resuming: a batch is appended with one write, flushed and fsynced. A run started again with the
same --output keeps the whole batches already there (a batch cut short by a kill, and a torn last
line, are removed and done again), checks that they are the first records of --input, and goes
on from there. With the same flags, the file ends the same as one written without interruption:
batch k holds records [k * B, (k + 1) * B) and samples with a seed of its own (from --seed and
k), so neither depends on where a run stopped.
"""

import json
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from errors import UserError
from inference.engine import SamplingOptions, load_engine
from storage import as_path, is_remote
from train.progress import format_seconds


def read_records(path, field: str) -> list[dict]:
  """The records of a JSON Lines file, each checked to hold a string `field`."""
  source = as_path(path)
  if not source.is_file():
    raise UserError(f'--input={path} is not a file; pass a JSON Lines file, one record a line')
  records = []
  for number, line in enumerate(source.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      raise UserError(f'{path} line {number} is not JSON; write one JSON object a line') from None
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
      raise UserError(f'{path} line {number} has no string field {field!r}; add it or name the '
                      'field with --field')
    records.append(record)
  if not records:
    raise UserError(f'{path} holds no records; write one JSON object a line')
  return records


def resume_point(output, records: list[dict], field: str, batch_size: int) -> int:
  """How many records `output` already holds in whole batches (cutting off the rest of it)."""
  if not os.path.exists(output):
    return 0
  with open(output, 'rb') as f:
    data = f.read()
  lines = data.split(b'\n')[:-1]  # a last piece without its newline is torn
  done = []
  for line in lines:
    try:
      done.append(json.loads(line))
    except json.JSONDecodeError:
      break
  keep = min(len(done), len(records)) // batch_size * batch_size
  if len(done) >= len(records):
    keep = len(records) if len(done) == len(records) else keep
  for i, record in enumerate(done[:keep]):
    if not isinstance(record, dict) or record.get(field) != records[i][field]:
      raise UserError(f'{output} line {i + 1} is not the result of record {i + 1} of the input; '
                      'pass another --output or delete it to start over')
  cut = sum(len(line) + 1 for line in lines[:keep])
  if cut != len(data):
    with open(output, 'r+b') as f:
      f.truncate(cut)
  return keep


def batch_seed(seed: int, batch_index: int) -> int:
  """The sampling seed of batch `batch_index`: a pure function of (seed, batch index)."""
  return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0] & 0x7FFFFFFF)


def run_batch(engine, batch: list[dict], field: str, options: SamplingOptions,
              batch_index: int) -> list[dict]:
  texts = [record[field] for record in batch]
  if engine.kind == 'classification':
    return [{**record, **result} for record, result in zip(batch, engine.classify(texts))]
  seeded = SamplingOptions(options.max_tokens, options.temperature, options.top_k,
                           options.top_p, batch_seed(options.seed, batch_index))
  return [{**record, 'completion': completion}
          for record, completion in zip(batch, engine.complete(texts, seeded))]


def generate_file(run_dir, input_path, output, field: str | None, batch_size: int,
                  options: SamplingOptions | None, quantize: str | None = None,
                  progress: bool = True) -> int:
  """`launch.py generate` (module docstring). `options.temperature` None: the run's own."""
  if batch_size < 1:
    raise UserError(f'--batch_size={batch_size} must be at least 1')
  if is_remote(output):
    raise UserError(f'--output={output}: write the output to a local file (it is appended to '
                    'batch by batch), then copy it to the bucket')
  engine = load_engine(run_dir, quantize)
  field = field or ('prompt' if engine.kind == 'completion' else 'text')
  records = read_records(input_path, field)
  if engine.kind == 'completion':
    if options.temperature is None:
      t = engine.run.exp.config.train.sample_temperature
      options = SamplingOptions(options.max_tokens, t, options.top_k, options.top_p, options.seed)
    engine.check(options)
  start = resume_point(output, records, field, batch_size)
  if start and progress:
    print(f'{output} holds {start} of {len(records)} records; resuming', file=sys.stderr)
  bar = tqdm(total=len(records), initial=start, unit='record', dynamic_ncols=True,
             file=sys.stderr, disable=not (progress and sys.stderr.isatty()))
  began = time.perf_counter()
  with open(output, 'a', encoding='utf-8') as out:
    for first in range(start, len(records), batch_size):
      results = run_batch(engine, records[first:first + batch_size], field, options,
                          first // batch_size)
      out.write(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in results))
      out.flush()
      os.fsync(out.fileno())
      bar.update(len(results))
      done = first + len(results)
      if progress and bar.disable:
        rate = (done - start) / (time.perf_counter() - began)
        print(f'{done}/{len(records)} records | {rate:.2f} records/s | ETA '
              f'{format_seconds((len(records) - done) / max(rate, 1e-9))}', file=sys.stderr,
              flush=True)
  bar.close()
  if progress:
    print(f'wrote {len(records)} records to {output}', file=sys.stderr)
  return 0
