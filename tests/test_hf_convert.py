"""`launch.py convert` against transformers itself: small random LlamaForCausalLM and
GPT2LMHeadModel folders (grouped-query with Llama 3 rope scaling, untied; multi-query with
biases and a head_dim of its own, tied; GPT-2: multi-head, tied, biases, learned positions) are
converted into run directories and back. The float32 logits of the converted model agree with
transformers' to below 1e-4, the folder written back loads in transformers with the same
logits, the tokenizer gives transformers' ids (BOS included), `eval` and fine-tuning
(`train.init_from`) start from the converted model's loss.

torch and transformers are test-only dependencies: without them these tests skip (the ones
that need neither still run). One module-scoped fixture builds and converts every model once.
"""

import contextlib
import io
import json

import numpy as np
import pytest

from errors import UserError
from models.hf_config import model_settings

CORPUS = ''.join(f'def function_{i}(x):\n    return x * {i} + {i % 7}  # line {i}\n'
                 for i in range(400))
LLAMA3_ROPE = {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
               'high_freq_factor': 4.0, 'original_max_position_embeddings': 16}
CASES = {  # name: (family, config keywords)
    'llama_gqa_untied_llama3': ('llama', dict(num_attention_heads=4, num_key_value_heads=2,
                                              tie_word_embeddings=False, rope_theta=500000.0,
                                              rope_scaling=LLAMA3_ROPE)),
    'llama_mqa_bias_head_dim': ('llama', dict(num_attention_heads=4, num_key_value_heads=1,
                                              head_dim=16, attention_bias=True, mlp_bias=True,
                                              tie_word_embeddings=True, rms_norm_eps=1e-5)),
    'gpt2_mha_tied': ('gpt2', dict()),  # multi-head, learned positions, biases everywhere
}


def _tokenizer(with_bos: bool):
  """A byte-level BPE trained on CORPUS; the Llama one puts <s> before every text."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  special = ['<s>', '</s>'] if with_bos else ['<|endoftext|>']
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator([CORPUS], trainers.BpeTrainer(
      vocab_size=320, special_tokens=special, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  if with_bos:
    tokenizer.post_processor = processors.TemplateProcessing(
        single='<s> $A', special_tokens=[('<s>', tokenizer.token_to_id('<s>'))])
  return tokenizer


def _hf_model(transformers, family: str, vocab: int, keywords: dict):
  if family == 'llama':
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=1, **keywords)
    return transformers.LlamaForCausalLM(config).eval()
  config = transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4,
                                   n_positions=64, bos_token_id=0, eos_token_id=0, **keywords)
  model = transformers.GPT2LMHeadModel(config).eval()
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():  # GPT-2 initialises biases and LayerNorms trivially: make them count
    for name, param in model.named_parameters():
      if name.endswith('bias') or 'ln_' in name:
        param.add_(0.1 * torch.randn_like(param))
  return model


def _our_logits(run_dir, tokens: np.ndarray) -> np.ndarray:
  from train import checkpoint
  from train.experiment import build_experiment
  from train.run_dir import load_run_config
  exp = build_experiment(load_run_config(run_dir), with_data=False, progress=False)
  with exp.mesh_context():
    state, step, _ = checkpoint.restore_latest(checkpoint.checkpoint_dir(run_dir),
                                               exp.abstract_state)
    assert step == 0 and int(state.step) == 0
    return np.asarray(exp.model.apply({'params': state.params}, tokens))


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """{case: dict(hf=folder, run=run dir, back=folder written back, logits of transformers on
  `tokens` before and after the round trip, ours)}, plus 'tokens' and 'corpus'."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  from tools.convert import convert
  root = tmp_path_factory.mktemp('hf')
  corpus = root / 'corpus.txt'
  corpus.write_text(CORPUS)
  tokenizers = {'llama': _tokenizer(with_bos=True), 'gpt2': _tokenizer(with_bos=False)}
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 320, size=(2, 24)).astype(np.int32)
  out = {'tokens': tokens, 'corpus': corpus}
  for index, (name, (family, keywords)) in enumerate(CASES.items()):
    torch.manual_seed(index)
    tokenizer = tokenizers[family]
    model = _hf_model(transformers, family, tokenizer.get_vocab_size(), keywords)
    hf, run, back = root / name, root / f'{name}_run', root / f'{name}_back'
    model.save_pretrained(hf, max_shard_size='20KB' if family == 'gpt2' else '5GB')
    tokenizer.save(str(hf / 'tokenizer.json'))
    with contextlib.redirect_stdout(io.StringIO()):
      convert(str(hf), str(run), data=str(corpus), seq_len=32)
      convert(str(run), str(back), max_shard_mb=0 if name == 'gpt2_mha_tied' else 5000)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    with torch.no_grad():
      expected = model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
      round_trip = reloaded(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    out[name] = dict(hf=hf, run=run, back=back, model=model, expected=expected,
                     round_trip=round_trip, ours=_our_logits(run, tokens),
                     reloaded_type=type(reloaded).__name__)
  return out


@pytest.mark.slow  # the module's fixture builds and converts every model once
@pytest.mark.parametrize('case', list(CASES))
def test_logits_match_transformers_both_ways(converted, case):
  result = converted[case]
  assert np.abs(result['ours'] - result['expected']).max() < 1e-4
  assert np.abs(result['round_trip'] - result['expected']).max() < 1e-5
  family = CASES[case][0]
  assert result['reloaded_type'] == ('GPT2LMHeadModel' if family == 'gpt2'
                                     else 'LlamaForCausalLM')
  written = json.loads((result['back'] / 'config.json').read_text())
  assert model_settings(written) == model_settings(
      json.loads((result['hf'] / 'config.json').read_text()))
  if family == 'gpt2':  # read from transformers' shards, written as ours (max_shard_mb=0:
    for folder in (result['hf'], result['back']):  # one file per layer or group)
      index = json.loads((folder / 'model.safetensors.index.json').read_text())
      assert len(set(index['weight_map'].values())) >= 3


@pytest.mark.slow
def test_tokenizer_and_eval_match_transformers(converted, monkeypatch, capsys):
  import torch
  import transformers
  from data.tokenizers import HFTokenizer
  from tools.trained_run import evaluate_run
  texts = ['def f(x):\n    return x', ' hello  world', '', 'return 7  # line 3']
  for case, with_bos in (('llama_gqa_untied_llama3', True), ('gpt2_mha_tied', False)):
    reference = transformers.AutoTokenizer.from_pretrained(converted[case]['back'])
    ours = HFTokenizer.load(converted[case]['run'] / 'tokenizer.json')
    for text in texts:
      assert ours.encode(text).tolist() == reference(text).input_ids
    assert (ours.bos_id is not None) == with_bos
    assert (reference('x').input_ids[0] == ours.bos_id) == with_bos

  case = converted['llama_gqa_untied_llama3']
  monkeypatch.chdir(case['run'].parent)  # the run's data.cache_dir is relative
  capsys.readouterr()
  evaluate_run(str(case['run']), data=str(converted['corpus']), tokens='31', as_json=True)
  result = json.loads(capsys.readouterr().out)
  ids = transformers.AutoTokenizer.from_pretrained(case['back'])(CORPUS).input_ids[:32]
  with torch.no_grad():
    ids_t = torch.tensor([ids])
    expected = float(case['model'](ids_t, labels=ids_t).loss)
  assert result['tokens'] == 31 and result['step'] == 0
  assert abs(result['loss'] - expected) < 1e-4

  from train.config import load_config  # configs/run.py:RUN gives the converted run's config
  config = load_config(f"{_repo() / 'configs' / 'run.py'}:{case['run']}")
  stored = json.loads((case['run'] / 'config.json').read_text())
  assert config.model.to_dict() == stored['model'] and config.data.source == str(
      converted['corpus'])


@pytest.mark.slow
def test_fine_tune_starts_at_the_converted_loss_and_falls(converted, tmp_path, monkeypatch):
  """train.init_from=<HF folder>: step 0, the model and tokenizer of the folder; the first
  step's loss is transformers' loss of the converted model on that batch, and it falls."""
  import torch
  from train.config import load_config
  from train.experiment import open_corpus
  from train.init_from import apply_init_from, source_params
  from train.loop import train
  from train.metrics import read_metrics
  from data import loader
  from models.config import TransformerConfig
  from models.hf_checkpoint import load_folder_params
  case = converted['llama_gqa_untied_llama3']
  monkeypatch.chdir(tmp_path)
  config = load_config(str(_repo() / 'configs' / 'tiny.py'), [
      f'--config.train.init_from={case["hf"]}', f'--config.data.source={converted["corpus"]}',
      '--config.data.seq_len=32', '--config.train.batch_size=4', '--config.train.steps=6',
      '--config.train.log_every=1', '--config.train.eval_every=0',
      '--config.train.eval_batches=1', '--config.train.sample_tokens=0',
      '--config.checkpoint.every=0', '--config.optim.lr=1e-2', '--config.optim.warmup_steps=0'])
  summary = train(config, tmp_path / 'fine_tuned', progress_enabled=False)
  losses = [record['loss'] for record in read_metrics(tmp_path / 'fine_tuned', 'train')]

  resolved = apply_init_from(config)
  assert resolved.model.n_kv_heads == 2 and resolved.model.rope_scaling_factor == 8.0
  corpus = open_corpus(resolved, resolved.model.vocab_size, progress=False)
  batch = loader.train_batch(corpus.train_tokens, resolved.seed, 0, 4, 32, 0, 1)
  with torch.no_grad():
    ids = torch.as_tensor(np.asarray(batch), dtype=torch.long)
    first = float(case['model'](ids, labels=ids).loss)  # shifts: predicts ids[:, 1:]
  assert abs(losses[0] - first) < 1e-4
  assert summary['steps'] == 6 and losses[-1] < losses[0] - 0.3

  # a run directory as the source gives the same weights as the folder it was converted from
  model_cfg = TransformerConfig.from_dict(resolved.model)
  from_run, from_folder = source_params(case['run'], model_cfg), load_folder_params(
      case['hf'], model_cfg)
  for name in ('embedding',):
    np.testing.assert_array_equal(from_run[name], from_folder[name])
  np.testing.assert_array_equal(from_run['layer_1']['attn']['key']['kernel'],
                                from_folder['layer_1']['attn']['key']['kernel'])


def _repo():
  from pathlib import Path
  return Path(__file__).resolve().parent.parent


def test_unsupported_models_are_refused_in_one_line():
  llama = {'architectures': ['LlamaForCausalLM'], 'vocab_size': 10, 'hidden_size': 8,
           'num_hidden_layers': 1, 'num_attention_heads': 2, 'intermediate_size': 16}
  with pytest.raises(UserError, match='MistralForCausalLM'):
    model_settings({**llama, 'architectures': ['MistralForCausalLM']})
  with pytest.raises(UserError, match="rope_scaling type 'yarn'.*hidden_act 'gelu'"):
    model_settings({**llama, 'rope_scaling': {'rope_type': 'yarn', 'factor': 4.0},
                    'hidden_act': 'gelu'})
  gpt2 = {'architectures': ['GPT2LMHeadModel'], 'vocab_size': 10, 'n_embd': 8, 'n_layer': 1,
          'n_head': 2, 'n_positions': 16}
  with pytest.raises(UserError, match='scale_attn_by_inverse_layer_idx=True'):
    model_settings({**gpt2, 'scale_attn_by_inverse_layer_idx': True})
  settings = model_settings({**llama, 'rope_parameters': {  # the transformers 5 spelling
      'rope_type': 'llama3', 'rope_theta': 5e5, 'factor': 32.0, 'low_freq_factor': 1.0,
      'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}})
  assert settings['rope_theta'] == 5e5 and settings['rope_scaling_factor'] == 32.0


def test_convert_command_errors_exit_2(tmp_path, capsys):
  import launch
  assert launch.main(['convert', str(tmp_path / 'missing'), str(tmp_path / 'out')]) == 2
  assert 'has no config.json' in capsys.readouterr().err
  (tmp_path / 'hf').mkdir()
  (tmp_path / 'hf' / 'config.json').write_text(json.dumps({'architectures': ['BertModel']}))
  assert launch.main(['convert', str(tmp_path / 'hf'), str(tmp_path / 'out')]) == 2
  assert 'cannot convert BertModel' in capsys.readouterr().err


def test_safetensors_files_round_trip(tmp_path):
  """Our numpy writer and reader against each other and, where installed, the safetensors
  library (float32, bfloat16, float16, int64)."""
  import ml_dtypes
  from models.hf_safetensors import read_tensors, write_tensors
  rng = np.random.default_rng(0)
  tensors = {'a.weight': rng.standard_normal((3, 5)).astype(np.float32),
             'b': rng.standard_normal((7,)).astype(ml_dtypes.bfloat16),
             'c': rng.standard_normal((2, 2, 2)).astype(np.float16),
             'd': np.arange(5, dtype=np.int64)}
  write_tensors(tmp_path / 'x.safetensors', tensors.items())
  read = dict(read_tensors(tmp_path / 'x.safetensors'))
  for name, value in tensors.items():
    assert read[name].dtype == value.dtype
    np.testing.assert_array_equal(read[name], value)
  safetensors_numpy = pytest.importorskip('safetensors.numpy')
  theirs = safetensors_numpy.load_file(str(tmp_path / 'x.safetensors'))
  np.testing.assert_array_equal(theirs['a.weight'], tensors['a.weight'])
  safetensors_numpy.save_file({'e': tensors['c']}, str(tmp_path / 'y.safetensors'))
  np.testing.assert_array_equal(dict(read_tensors(tmp_path / 'y.safetensors'))['e'],
                                tensors['c'])


def test_byte_tokenizer_json_gives_the_byte_ids():
  """A run on the bytes tokenizer exports a tokenizer.json whose ids are the UTF-8 bytes."""
  pytest.importorskip('tokenizers')
  from data.tokenizers import ByteTokenizer
  from tools.convert import byte_tokenizer
  text = 'héllo\x00 wörld \u2603\n\t~'
  core = byte_tokenizer()
  assert core.encode(text).ids == ByteTokenizer().encode(text).tolist()
  assert core.decode(core.encode(text).ids) == text
