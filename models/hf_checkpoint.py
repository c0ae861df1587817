"""Hugging Face `LlamaForCausalLM` / `GPT2LMHeadModel` <-> this codebase's Transformer.

Configs: `model_settings(hf_config)` turns a config.json into `model.*` settings (refusing, in
one line, every architecture or option the Transformer does not compute the same way);
`hf_config(cfg, ...)` is the reverse.

Weights: `import_tensor(name, array, cfg, family)` maps one Hugging Face tensor onto the
parameters it holds here, as (path, float32 array) pairs; `export_layer(...)` yields a layer's
Hugging Face tensors from this codebase's parameters. Both work on one tensor or one layer at
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
import json
import re
from pathlib import Path
from typing import Iterator

import flax.linen as nn
import jax
import numpy as np

from errors import UserError
from models.config import TransformerConfig
from models.hf_safetensors import folder_files, read_tensors
from models.transformer import init_params

LLAMA, GPT2 = 'llama', 'gpt2'
ARCHITECTURES = {'LlamaForCausalLM': LLAMA, 'GPT2LMHeadModel': GPT2}
GELU_TANH = ('gelu_new', 'gelu_pytorch_tanh')


def family_of(hf: dict) -> str:
  """'llama' or 'gpt2'; UserError naming the architecture otherwise."""
  names = hf.get('architectures') or []
  for name in names:
    if name in ARCHITECTURES:
      return ARCHITECTURES[name]
  if not names and hf.get('model_type') in (LLAMA, GPT2):
    return hf['model_type']
  found = ', '.join(names) or f"model_type {hf.get('model_type')!r}"
  raise UserError(f'cannot convert {found}: only {", ".join(ARCHITECTURES)} are supported')


def _rope(hf: dict) -> tuple[float, dict | None]:
  """(rope_theta, the llama3 scaling parameters or None), from the transformers 4 keys
  (rope_theta, rope_scaling) or the transformers 5 key (rope_parameters)."""
  params = hf.get('rope_parameters') or {}
  scaling = hf.get('rope_scaling') or params
  theta = float(hf.get('rope_theta', params.get('rope_theta', 10000.0)))
  kind = scaling.get('rope_type', scaling.get('type', 'default')) if scaling else 'default'
  return theta, (scaling if kind == 'llama3' else None if kind == 'default' else kind)


def model_settings(hf: dict) -> dict:
  """`model.*` settings computing what the Hugging Face config.json `hf` computes."""
  family = family_of(hf)
  refused = []
  if family == LLAMA:
    heads = int(hf['num_attention_heads'])
    settings = {
        'vocab_size': int(hf['vocab_size']), 'd_model': int(hf['hidden_size']),
        'n_layers': int(hf['num_hidden_layers']), 'n_heads': heads,
        'n_kv_heads': int(hf.get('num_key_value_heads') or heads),
        'head_dim': int(hf.get('head_dim') or int(hf['hidden_size']) // heads),
        'd_ff': int(hf['intermediate_size']),
        'max_len': int(hf.get('max_position_embeddings', 2048)), 'norm': 'rmsnorm',
        'norm_eps': float(hf.get('rms_norm_eps', 1e-6)), 'position': 'rope', 'mlp': 'swiglu',
        'use_bias': bool(hf.get('attention_bias', False)),
        'tie_embeddings': bool(hf.get('tie_word_embeddings', False))}
    theta, scaling = _rope(hf)
    settings['rope_theta'] = theta
    if isinstance(scaling, str):
      refused.append(f'rope_scaling type {scaling!r} (only llama3)')
    elif scaling:
      settings.update(
          rope_scaling_factor=float(scaling['factor']),
          rope_low_freq_factor=float(scaling['low_freq_factor']),
          rope_high_freq_factor=float(scaling['high_freq_factor']),
          rope_original_max_len=int(scaling['original_max_position_embeddings']))
    if hf.get('hidden_act', 'silu') != 'silu':
      refused.append(f"hidden_act {hf['hidden_act']!r} (only silu)")
    if bool(hf.get('mlp_bias', False)) != settings['use_bias']:
      refused.append('attention_bias != mlp_bias')
  else:
    d_model = int(hf['n_embd'])
    settings = {
        'vocab_size': int(hf['vocab_size']), 'd_model': d_model, 'n_layers': int(hf['n_layer']),
        'n_heads': int(hf['n_head']), 'n_kv_heads': int(hf['n_head']),
        'head_dim': d_model // int(hf['n_head']), 'd_ff': int(hf.get('n_inner') or 4 * d_model),
        'max_len': int(hf['n_positions']), 'norm': 'layernorm',
        'norm_eps': float(hf.get('layer_norm_epsilon', 1e-5)), 'position': 'learned',
        'mlp': 'gelu', 'use_bias': True,
        'tie_embeddings': bool(hf.get('tie_word_embeddings', True))}
    if hf.get('activation_function', 'gelu_new') not in GELU_TANH:
      refused.append(f"activation_function {hf['activation_function']!r} (only gelu_new)")
    for key, fine in (('scale_attn_by_inverse_layer_idx', False), ('scale_attn_weights', True),
                      ('add_cross_attention', False)):
      if bool(hf.get(key, fine)) != fine:
        refused.append(f'{key}={hf[key]}')
  if refused:
    raise UserError(f'cannot convert this {family} model: {"; ".join(refused)} not supported')
  return {**settings, 'vocab_pad_multiple': 1, 'dropout': 0.0, 'scan_layers': False}


def family_of_model(cfg: TransformerConfig) -> str:
  """The Hugging Face family computing what `cfg` computes; UserError if there is none."""
  if cfg.norm == 'rmsnorm' and cfg.position == 'rope' and cfg.mlp == 'swiglu':
    return LLAMA
  if (cfg.norm == 'layernorm' and cfg.position == 'learned' and cfg.mlp == 'gelu'
      and cfg.use_bias and cfg.n_kv_heads == cfg.n_heads
      and cfg.n_heads * cfg.head_dim == cfg.d_model):
    return GPT2
  raise UserError(f'a model with norm={cfg.norm}, position={cfg.position}, mlp={cfg.mlp}, '
                  f'use_bias={cfg.use_bias} has no Hugging Face equivalent here; export '
                  'rmsnorm+rope+swiglu (Llama) or layernorm+learned+gelu with biases (GPT-2)')


def hf_config(cfg: TransformerConfig, bos_id: int | None, eos_id: int | None) -> dict:
  """The config.json of the Hugging Face model computing what `cfg` computes."""
  family = family_of_model(cfg)
  tokens = {'bos_token_id': bos_id, 'eos_token_id': eos_id}
  if family == GPT2:
    return {'architectures': ['GPT2LMHeadModel'], 'model_type': GPT2,
            'vocab_size': cfg.vocab_size, 'n_embd': cfg.d_model, 'n_layer': cfg.n_layers,
            'n_head': cfg.n_heads, 'n_inner': cfg.d_ff, 'n_positions': cfg.max_len,
            'layer_norm_epsilon': cfg.norm_eps, 'activation_function': 'gelu_new',
            'tie_word_embeddings': cfg.tie_embeddings, 'resid_pdrop': 0.0, 'embd_pdrop': 0.0,
            'attn_pdrop': 0.0, 'torch_dtype': 'float32', **tokens}
  out = {'architectures': ['LlamaForCausalLM'], 'model_type': LLAMA,
         'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model,
         'num_hidden_layers': cfg.n_layers, 'num_attention_heads': cfg.n_heads,
         'num_key_value_heads': cfg.n_kv_heads, 'head_dim': cfg.head_dim,
         'intermediate_size': cfg.d_ff, 'max_position_embeddings': cfg.max_len,
         'rms_norm_eps': cfg.norm_eps, 'hidden_act': 'silu', 'rope_theta': cfg.rope_theta,
         'attention_bias': cfg.use_bias, 'mlp_bias': cfg.use_bias,
         'tie_word_embeddings': cfg.tie_embeddings, 'torch_dtype': 'float32', **tokens}
  if cfg.rope_scaling_factor != 1.0:
    out['rope_scaling'] = {
        'rope_type': 'llama3', 'factor': cfg.rope_scaling_factor,
        'low_freq_factor': cfg.rope_low_freq_factor,
        'high_freq_factor': cfg.rope_high_freq_factor,
        'original_max_position_embeddings': cfg.rope_original_max_len}
  return out


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


def read_config(folder) -> dict:
  """The config.json of a Hugging Face model folder."""
  path = Path(folder) / 'config.json'
  if not path.is_file():
    raise UserError(f'{folder} has no config.json; pass a Hugging Face model folder')
  try:
    return json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError):
    raise UserError(f'{path} is not JSON; pass a Hugging Face model folder') from None


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
