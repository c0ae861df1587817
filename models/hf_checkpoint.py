"""Hugging Face `LlamaForCausalLM` / `GPT2LMHeadModel` weights <-> this codebase's Transformer.

(models/hf_config.py maps the config.json.) `load_folder_params(folder, cfg)` reads a folder's
safetensors into this codebase's parameters, checking every name and shape.
`import_tensor(name, array, cfg, family)` maps one Hugging Face tensor onto the parameters it
holds here, as (path, float32 array) pairs; `export_layer(...)` yields a layer's Hugging Face
tensors from this codebase's parameters. Both work on one tensor or one layer at
a time, so a converter streams shard by shard. The layouts:

  Llama  torch Linear weights are [out, in]: q_proj [H*Dh, D] -> query kernel [D, H, Dh] (and
         k/v with the K kv heads), o_proj [D, H*Dh] -> out kernel [H, Dh, D], gate/up/down_proj
         -> mlp gate/up/down kernels transposed. Hugging Face's Llama already uses the
         rotate-half rotary layout (its conversion script permuted Meta's q/k weights), which is
         the layout of models/layers.rotary, so q/k need no permutation.
  GPT-2  Conv1D weights are [in, out]: c_attn [D, 3D] splits into query/key/value kernels;
         gelu_new is the tanh approximation models/layers.Mlp uses; learned positions (wpe),
         LayerNorm with biases and biases in every projection (model.use_bias).
"""

import dataclasses
import re
from typing import Iterator

import flax.linen as nn
import jax
import numpy as np

from errors import UserError
from models.config import TransformerConfig
from models.hf_config import LLAMA, family_of, read_config
from models.hf_safetensors import folder_files, read_tensors
from models.transformer import init_params

_LLAMA_LAYER = {
    'input_layernorm.weight': ('attn_norm', 'scale'),
    'post_attention_layernorm.weight': ('mlp_norm', 'scale'),
    'self_attn.q_proj': ('attn', 'query'), 'self_attn.k_proj': ('attn', 'key'),
    'self_attn.v_proj': ('attn', 'value'), 'self_attn.o_proj': ('attn', 'out'),
    'mlp.gate_proj': ('mlp', 'gate'), 'mlp.up_proj': ('mlp', 'up'),
    'mlp.down_proj': ('mlp', 'down')}
_GPT2_LAYER = {
    'ln_1': ('attn_norm',), 'ln_2': ('mlp_norm',), 'attn.c_proj': ('attn', 'out'),
    'mlp.c_fc': ('mlp', 'up'), 'mlp.c_proj': ('mlp', 'down')}
_LAYER = re.compile(r'^(?:model\.|transformer\.)?(?:layers|h)\.(\d+)\.(.+)\.(weight|bias)$')


def import_tensor(name: str, array: np.ndarray, cfg: TransformerConfig,
                  family: str) -> list[tuple[tuple[str, ...], np.ndarray]]:
  """The (parameter path, float32 value) pairs that Hugging Face tensor `name` holds here
  ([] for buffers and a tied lm_head); UserError for a tensor this mapping does not know."""
  h, k, dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  value = np.asarray(array, dtype=np.float32)
  short = re.sub(r'^(model|transformer)\.', '', name)
  top = {'embed_tokens.weight': ('embedding',), 'wte.weight': ('embedding',),
         'wpe.weight': ('position_embedding',), 'norm.weight': ('final_norm', 'scale'),
         'ln_f.weight': ('final_norm', 'scale'), 'ln_f.bias': ('final_norm', 'bias')}
  if short in top:
    return [(top[short], value)]
  if short == 'lm_head.weight':
    return [] if cfg.tie_embeddings else [(('lm_head', 'kernel'), value.T)]
  match = _LAYER.match(name)
  if match is None:
    if short.endswith(('rotary_emb.inv_freq', 'attn.masked_bias')):
      return []  # buffers of older checkpoints
    raise UserError(f'tensor {name} has no counterpart in this {family} conversion; is the '
                    'folder a plain LlamaForCausalLM / GPT2LMHeadModel?')
  layer, module, kind = f'layer_{match.group(1)}', match.group(2), match.group(3)
  if family == LLAMA:
    full = f'{module}.{kind}'
    if full in _LLAMA_LAYER:
      return [((layer,) + _LLAMA_LAYER[full], value)]
    target = _LLAMA_LAYER.get(module)
    if target is None:
      if module.endswith('rotary_emb'):
        return []
      raise UserError(f'tensor {name} has no counterpart in the Llama conversion')
    if kind == 'weight':
      value = value.T  # [in, out]
      heads = {'query': h, 'key': k, 'value': k}.get(target[1])
      if heads:
        value = value.reshape(cfg.d_model, heads, dh)
      elif target[1] == 'out':
        value = value.reshape(h, dh, cfg.d_model)
      return [((layer,) + target + ('kernel',), value)]
    heads = {'query': h, 'key': k, 'value': k}.get(target[1])
    return [((layer,) + target + ('bias',), value.reshape(heads, dh) if heads else value)]
  if module == 'attn':
    return []  # attn.bias: the causal-mask buffer of older GPT-2 checkpoints
  if module == 'attn.c_attn':
    parts = np.split(value, 3, axis=-1)
    shape = (cfg.d_model, h, dh) if kind == 'weight' else (h, dh)
    leaf = 'kernel' if kind == 'weight' else 'bias'
    return [((layer, 'attn', proj, leaf), part.reshape(shape))
            for proj, part in zip(('query', 'key', 'value'), parts)]
  target = _GPT2_LAYER.get(module)
  if target is None:
    raise UserError(f'tensor {name} has no counterpart in the GPT-2 conversion')
  if module.startswith('ln_'):
    return [((layer,) + target + ('scale' if kind == 'weight' else 'bias',), value)]
  if kind == 'bias':
    return [((layer,) + target + ('bias',), value)]
  if target[1] == 'out':
    value = value.reshape(h, dh, cfg.d_model)
  return [((layer,) + target + ('kernel',), value)]


def export_top(params: dict, cfg: TransformerConfig, family: str) -> Iterator[tuple[str, np.ndarray]]:
  """The Hugging Face tensors outside the layers: embeddings, final norm, untied lm_head."""
  vocab = cfg.vocab_size
  table = np.asarray(params['embedding'])[:vocab]
  if family == LLAMA:
    yield 'model.embed_tokens.weight', table
    yield 'model.norm.weight', np.asarray(params['final_norm']['scale'])
  else:
    yield 'transformer.wte.weight', table
    yield 'transformer.wpe.weight', np.asarray(params['position_embedding'])
    yield 'transformer.ln_f.weight', np.asarray(params['final_norm']['scale'])
    yield 'transformer.ln_f.bias', np.asarray(params['final_norm']['bias'])
  if not cfg.tie_embeddings:
    yield 'lm_head.weight', np.asarray(params['lm_head']['kernel'])[:, :vocab].T


def export_layer(layer: dict, index: int, cfg: TransformerConfig,
                 family: str) -> Iterator[tuple[str, np.ndarray]]:
  """The Hugging Face tensors of block `index` from its parameters here (numpy arrays)."""
  d, h, k, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  attn = layer['attn']
  if family == LLAMA:
    prefix = f'model.layers.{index}.'
    yield prefix + 'input_layernorm.weight', np.asarray(layer['attn_norm']['scale'])
    yield prefix + 'post_attention_layernorm.weight', np.asarray(layer['mlp_norm']['scale'])
    for module, (group, proj) in _LLAMA_LAYER.items():
      if module.endswith('.weight'):
        continue
      params = (attn if group == 'attn' else layer['mlp'])[proj]
      kernel = np.asarray(params['kernel'])
      rows = h * dh if proj == 'out' else kernel.shape[0]
      yield prefix + module + '.weight', kernel.reshape(rows, -1).T
      if cfg.use_bias:
        yield prefix + module + '.bias', np.asarray(params['bias']).reshape(-1)
    return
  prefix = f'transformer.h.{index}.'
  for norm, name in (('attn_norm', 'ln_1'), ('mlp_norm', 'ln_2')):
    yield prefix + name + '.weight', np.asarray(layer[norm]['scale'])
    yield prefix + name + '.bias', np.asarray(layer[norm]['bias'])
  qkv = [np.asarray(attn[p]['kernel']).reshape(d, h * dh) for p in ('query', 'key', 'value')]
  yield prefix + 'attn.c_attn.weight', np.concatenate(qkv, axis=1)
  yield prefix + 'attn.c_attn.bias', np.concatenate(
      [np.asarray(attn[p]['bias']).reshape(-1) for p in ('query', 'key', 'value')])
  yield prefix + 'attn.c_proj.weight', np.asarray(attn['out']['kernel']).reshape(h * dh, d)
  yield prefix + 'attn.c_proj.bias', np.asarray(attn['out']['bias'])
  for proj, name in (('up', 'c_fc'), ('down', 'c_proj')):
    yield prefix + f'mlp.{name}.weight', np.asarray(layer['mlp'][proj]['kernel'])
    yield prefix + f'mlp.{name}.bias', np.asarray(layer['mlp'][proj]['bias'])


def parameter_shapes(cfg: TransformerConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Every parameter path of the (unscanned) model and its shape, computing nothing."""
  boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0), 1))
  values = jax.tree.map(lambda x: x.value, boxed,  # not nn.meta.unbox: no mesh constraints
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  leaves = jax.tree_util.tree_flatten_with_path(values)[0]
  return {tuple(p.key for p in path): tuple(leaf.shape) for path, leaf in leaves}


def load_folder_params(folder, cfg: TransformerConfig) -> dict:
  """The parameters (nested dicts of float32 numpy arrays, unscanned layout) of the Hugging
  Face model in `folder`, read one memory-mapped tensor at a time; UserError when a tensor is
  missing, of another shape, or unknown."""
  family = family_of(read_config(folder))
  wanted = parameter_shapes(dataclasses.replace(cfg, scan_layers=False, remat='none'))
  params, seen = {}, set()
  for path in folder_files(folder):
    for name, array in read_tensors(path):
      for target, value in import_tensor(name, array, cfg, family):
        if wanted.get(target) != value.shape:
          raise UserError(f'{path.name}: {name} gives {"/".join(target)} of shape '
                          f'{value.shape}, expected {wanted.get(target, "no such parameter")}; '
                          'config.json does not describe these weights')
        node = params
        for key in target[:-1]:
          node = node.setdefault(key, {})
        node[target[-1]] = np.ascontiguousarray(value)
        seen.add(target)
  missing = sorted(set(wanted) - seen)
  if missing:
    raise UserError(f'{folder} lacks {"/".join(missing[0])} ({len(missing)} parameters '
                    'missing); is every shard there?')
  return params
