"""Runs a few optimizer steps of tiny models under given meshes and rule sets; prints JSON.

    python tests/sharding_worker.py --devices 8 --jobs '[{"model": "gpt2", "rules": "fsdp",
        "mesh": [1, 8, 1]}, ...]' [--out DIR] [--coordinator 127.0.0.1:PORT --num_processes 2
        --process_id 0]

Each job builds its state and step with `train/experiment.py` (no corpus), and feeds
the same synthetic batches (no data pipeline), each process its own rows of the global batch.
The first job of each model, optimizer and set of model overrides (`model_overrides`, e.g.
muP) is their reference: the line printed for every job holds its losses, the largest
parameter difference from the reference (param_diff) and from its own initial parameters
(param_change), relative to that parameter's largest entry. With
--out, job i's final parameters are also written to DIR/params_i.npz (process 0 only). With
--report, each job's step is only compiled and `tools/memory.py`'s report printed.
The multi-device tests start it in a subprocess so that XLA_FLAGS is set before jax starts.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STEPS = 3
BATCH = 8
SEQ_LEN = 16

MODELS = {
    # GPT-2 style: LayerNorm, learned positions, GELU, biases, tied embeddings; the vocabulary
    # (100) divides no tensor axis unless padded (vocab_pad_multiple=8 makes it 104).
    'gpt2': dict(vocab_size=100, vocab_pad_multiple=8, d_model=32, n_layers=2, n_heads=8,
                 d_ff=128, max_len=SEQ_LEN, norm='layernorm', position='learned', mlp='gelu',
                 use_bias=True, tie_embeddings=True),
    # Llama style: RMSNorm, rotary, SwiGLU, untied, grouped-query attention with 2 KV heads
    # (fewer than a tensor axis of 4 or 8: replicated), unpadded vocabulary, scanned layers.
    'llama': dict(vocab_size=100, d_model=32, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=64,
                  max_len=SEQ_LEN, norm='rmsnorm', position='rope', mlp='swiglu',
                  use_bias=False, tie_embeddings=False, scan_layers=True),
    # T5 style: encoder-decoder on span corruption (cross-attention, scanned stacks), rotary,
    # grouped-query attention, untied, padded vocabulary (its top ids are the sentinels).
    't5': dict(kind='encoder_decoder', vocab_size=100, vocab_pad_multiple=8, d_model=32,
               n_layers=2, n_heads=8, n_kv_heads=2, d_ff=64, max_len=SEQ_LEN, norm='rmsnorm',
               position='rope', mlp='swiglu', tie_embeddings=False, scan_layers=True),
    # BERT style: a bidirectional encoder classifier (padding masked, mean-pooled head).
    'bert': dict(kind='encoder', vocab_size=100, vocab_pad_multiple=8, d_model=32, n_layers=2,
                 n_heads=8, d_ff=128, max_len=SEQ_LEN, norm='layernorm', position='learned',
                 mlp='gelu', use_bias=True, tie_embeddings=True),
}
TASKS = {'t5': dict(name='span_corruption'), 'bert': dict(name='classify', pooling='mean')}


def tiny_config(model: str, rules: str = 'dp', mesh=(1, 1, 1), dcn_data: int = 1, **train):
  """The base config with a tiny model, a constant lr and the given mesh and rule set."""
  from configs.base import get_config
  config = get_config()
  config.model.update(MODELS[model])
  config.task.update(TASKS.get(model, {}))
  config.data.seq_len = SEQ_LEN
  config.train.update(dict(batch_size=BATCH, steps=100, **train))
  # Heavy-ball momentum: its trace is sharded optimizer state, and unlike Adam it keeps
  # round-off small where the true gradient is zero; clipping (global norm) is active.
  config.optim.update(dict(name='momentum', schedule='constant', warmup_steps=0, lr=0.5,
                           clip_norm=0.5, weight_decay=0.1))
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
  config.mesh.dcn_data = dcn_data
  config.sharding.rules = rules
  return config


def synthetic_batches(vocab_size: int, steps: int = STEPS, classify: bool = False):
  """Fixed batches of a learnable sequence: token t+1 = (3 t + 1) mod vocab, random starts.
  `classify`: rows of random lengths padded with -1, labelled by their first token's parity."""
  import numpy as np
  rng = np.random.default_rng(1234)
  batches = []
  for _ in range(steps):
    tokens = np.zeros((BATCH, SEQ_LEN + 1), np.int32)
    tokens[:, 0] = rng.integers(0, vocab_size, BATCH)
    for t in range(SEQ_LEN):
      tokens[:, t + 1] = (3 * tokens[:, t] + 1) % vocab_size
    if classify:
      lengths = rng.integers(3, SEQ_LEN + 1, BATCH)
      tokens[:, :SEQ_LEN][np.arange(SEQ_LEN)[None, :] >= lengths[:, None]] = -1
      tokens[:, -1] = tokens[:, 0] % 2
    batches.append(tokens)
  return batches


def run_job(job: dict, devices, initial_state=None):
  """(losses, final params, notes, initial state) of `job` on `devices`, fed process by process.

  The state is initialised sharded (`Experiment.init_state`) unless `initial_state` (a tree of numpy
  arrays) is given and the job says "init": "put": then it is put onto the job's shardings.
  """
  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  from train.experiment import build_experiment
  config = tiny_config(job['model'], job['rules'], tuple(job['mesh']), job.get('dcn_data', 1),
                       **job.get('train', {}))
  config.optim.update(job.get('optim', {}))
  config.model.update(job.get('model_overrides', {}))  # e.g. muP (tests/test_mup_sharding.py)
  exp = build_experiment(config, with_data=False, devices=devices)
  if initial_state is not None and job.get('init') == 'put':
    state = jax.device_put(initial_state, exp.state_shardings)
  else:
    state = exp.init_state()
  initial = _to_numpy(state)
  rows = BATCH // jax.process_count()
  first = jax.process_index() * rows
  losses = []
  with exp.mesh_context():
    for tokens in synthetic_batches(config.model.vocab_size,
                                    classify=config.task.name == 'classify'):
      batch = jax.make_array_from_process_local_data(
          exp.batch_sharding, tokens[first:first + rows], tokens.shape)
      state, metrics = exp.train_step(state, batch)
      losses.append(float(metrics['loss']))
  return losses, _to_numpy(state.params), exp.notes, initial


def _to_numpy(tree):
  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)


def max_relative_diff(params, reference) -> float:
  """The largest |a - b| of any leaf over that leaf's largest |b| (at least 0.01, so that a
  leaf whose true gradient is zero, like a key bias, is not judged on its round-off)."""
  import jax
  import numpy as np
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-2)),
                       params, reference)
  return max(jax.tree.leaves(diffs))


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, default=8, help='simulated CPU devices per process')
  parser.add_argument('--jobs', required=True, help='JSON list of {model, rules, mesh, ...}')
  parser.add_argument('--out', default=None)
  parser.add_argument('--report', action='store_true',
                      help="print each job's compiled memory and collectives report instead")
  parser.add_argument('--coordinator', default='none')
  parser.add_argument('--num_processes', type=int, default=0)
  parser.add_argument('--process_id', type=int, default=-1)
  parser.add_argument('--timeout_s', type=float, default=60)
  args = parser.parse_args(argv)
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}'
                             ' --xla_backend_optimization_level=0'  # compiles about 2x faster
                             ' --xla_llvm_disable_expensive_passes=true')
  import jax
  import ml_collections
  import numpy as np
  from sharding import distributed
  from train.state import path_names
  distributed.initialize(ml_collections.ConfigDict(dict(
      coordinator=args.coordinator, num_processes=args.num_processes,
      process_id=args.process_id, timeout_s=args.timeout_s)))
  if args.report:
    from tools.memory import build_report
    for job in json.loads(args.jobs):
      config = tiny_config(job['model'], job['rules'], tuple(job['mesh']))
      print(json.dumps(dict(job, **build_report(config))), flush=True)
    return
  references = {}  # (model, optimizer, overrides) -> (final params, initial state) of its first job
  for index, job in enumerate(json.loads(args.jobs)):
    count = int(np.prod(job['mesh'])) * job.get('dcn_data', 1)
    key = (job['model'], json.dumps(job.get('optim', {}), sort_keys=True),
           json.dumps(job.get('model_overrides', {}), sort_keys=True))
    reference = references.get(key)
    losses, params, notes, initial = run_job(job, jax.devices()[:count],
                                             reference and reference[1])
    reference = references.setdefault(key, (params, initial))
    if args.out and jax.process_index() == 0:
      flat = {'/'.join(path_names(path)): value
              for path, value in jax.tree_util.tree_flatten_with_path(params)[0]}
      np.savez(os.path.join(args.out, f'params_{index}.npz'), **flat)
    if jax.process_index() == 0:
      print(json.dumps(dict(job, losses=losses, param_diff=max_relative_diff(params, reference[0]),
                            param_change=max_relative_diff(params, initial.params),
                            notes=notes)), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
