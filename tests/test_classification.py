"""Classification: the metrics against hand-computed confusion matrices, the labelled file's
checks, and a tiny encoder classifier trained with `launch.py train` and used through
`train.classify.predict`; a classifier started from a trained decoder run (`task.init_from`)."""

import asyncio
import json

import jax
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

import launch
from configs.base import get_config
from data.split import validation_names
from errors import UserError
from inference.engine import load_engine
from inference.server import make_app
from tests.test_bad_input import assert_one_line_error
from tests.tiny_run import tiny_flags, write_corpus
from train import classify
from train.classification_metrics import confusion_matrix, plot_confusion, scores
from train.labelled import load_labelled, pack_rows


def test_scores_of_a_hand_computed_confusion_matrix():
  true = ['a', 'a', 'a', 'b', 'b', 'c', 'c', 'c', 'c']
  pred = ['a', 'b', 'a', 'b', 'c', 'c', 'c', 'a', 'b']
  ids = {'a': 0, 'b': 1, 'c': 2}
  matrix = confusion_matrix([ids[t] for t in true], [ids[p] for p in pred], 3)
  assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 1, 2]]  # rows true, columns predicted
  report = scores(matrix, ['a', 'b', 'c'])
  # precision = diagonal / column sum, recall = diagonal / row sum, F1 = 2PR / (P + R)
  expected = {'a': (2 / 3, 2 / 3, 2 / 3), 'b': (1 / 3, 1 / 2, 2 / 5), 'c': (2 / 3, 1 / 2, 4 / 7)}
  for label, (precision, recall, f1) in expected.items():
    got = report['per_class'][label]
    assert (got['precision'], got['recall'], got['f1']) == pytest.approx((precision, recall, f1))
  assert [report['per_class'][l]['support'] for l in 'abc'] == [3, 2, 4]
  assert report['accuracy'] == pytest.approx(5 / 9)
  assert report['macro_precision'] == pytest.approx(5 / 9)
  assert report['macro_recall'] == pytest.approx(5 / 9)
  assert report['macro_f1'] == pytest.approx(172 / 315)


def test_a_class_never_predicted_and_one_absent_score_zero(tmp_path):
  matrix = confusion_matrix([0, 0, 1], [0, 0, 0], 3)
  assert matrix.tolist() == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
  report = scores(matrix, ['x', 'y', 'z'])
  assert report['per_class']['x'] == {'precision': pytest.approx(2 / 3), 'recall': 1.0,
                                      'f1': pytest.approx(4 / 5), 'support': 2}
  assert report['per_class']['y'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
  assert report['per_class']['z'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 0}
  assert report['accuracy'] == pytest.approx(2 / 3)
  assert report['macro_f1'] == pytest.approx(4 / 15)
  plot_confusion(matrix, ['x', 'y', 'z'], tmp_path / 'cm.png')
  assert (tmp_path / 'cm.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_rows_are_tokens_padded_then_the_label():
  rows = pack_rows([np.array([1, 2, 3, 4]), np.array([5])], [1, 0], seq_len=3)
  assert rows.tolist() == [[1, 2, 3, 1], [5, -1, -1, 0]]


def _texts(label: str, count: int, rng) -> list[str]:
  alphabet = {'digits': '0123456789', 'letters': 'abcdefghij', 'symbols': '+-*/=<>!?%'}[label]
  return [''.join(rng.choice(list(alphabet), size=rng.integers(8, 30))) for _ in range(count)]


def write_labelled(path, per_class: int = 40, seed: int = 0) -> list[dict]:
  """Three easy classes: texts of digits, of letters, of symbols."""
  rng = np.random.default_rng(seed)
  records = [{'text': text, 'label': label} for label in ('digits', 'letters', 'symbols')
             for text in _texts(label, per_class, rng)]
  order = rng.permutation(len(records))
  records = [records[i] for i in order]
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  return records


def classify_config(source, **task):
  config = get_config()
  config.data.source, config.data.validation_fraction, config.data.seq_len = str(source), 0.25, 32
  config.task.name, config.model.kind = 'classify', 'encoder'
  config.task.update(task)
  return config


def test_labelled_file_mistakes_are_one_line(tmp_path):
  path = tmp_path / 'labelled.jsonl'
  path.write_text('{"text": "abc", "label": "x"}\n{"text": "def"}\n')
  with pytest.raises(UserError, match=r"record labelled.jsonl:2 has no field 'label'"):
    load_labelled(classify_config(path))
  path.write_text('{"text": "abc", "label": "x"}\n{"text": "  ", "label": "y"}\n')
  with pytest.raises(UserError, match='record labelled.jsonl:2 has an empty text'):
    load_labelled(classify_config(path))
  records = write_labelled(path, per_class=10)
  names = [f'labelled.jsonl:{i + 1}' for i in range(len(records))]
  held_out = sorted(validation_names(names, 0.25))
  records[int(held_out[0].split(':')[1]) - 1]['label'] = 'never_trained'
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  with pytest.raises(UserError, match="label 'never_trained', which no training record has"):
    load_labelled(classify_config(path))


def test_parquet_records_and_the_split(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  records = write_labelled(tmp_path / 'unused.jsonl', per_class=10)
  pq.write_table(pa.Table.from_pylist([{'body': r['text'], 'y': r['label']} for r in records]),
                 tmp_path / 'labelled.parquet')
  config = classify_config(tmp_path / 'labelled.parquet', label_field='y')
  config.data.text_field = 'body'
  data = load_labelled(config)
  names = [f'labelled.parquet:{i}' for i in range(30)]  # rows are named by their index
  held_out = validation_names(names, 0.25)
  assert data.labels == ['digits', 'letters', 'symbols']
  assert len(data.validation_rows) == len(held_out) and len(data.train_rows) == 30 - len(held_out)
  first_trained = records[next(i for i, name in enumerate(names) if name not in held_out)]
  row = data.train_rows[0]
  assert row[:len(first_trained['text'])].tolist() == list(first_trained['text'].encode())
  assert row[len(first_trained['text']):-1].tolist() == [-1] * (32 - len(first_trained['text']))
  assert data.labels[row[-1]] == first_trained['label']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('classify')
  records = write_labelled(tmp_path / 'labelled.jsonl')
  run_dir = tmp_path / 'run'
  flags = tiny_flags(tmp_path, run_dir, data__source=tmp_path / 'labelled.jsonl',
                     data__validation_fraction=0.25, task__name='classify',
                     model__kind='encoder', train__steps=40, train__batch_size=16,
                     optim__lr=3e-3, checkpoint__every=0)
  assert launch.main(['train'] + flags) == 0
  return tmp_path, run_dir, records


@pytest.mark.slow
def test_a_trained_classifier_reports_and_predicts(trained):
  tmp_path, run_dir, records = trained
  report = json.loads((run_dir / 'classification.json').read_text())
  names = [f'labelled.jsonl:{i + 1}' for i in range(len(records))]
  held_out = validation_names(names, 0.25)
  validation = [r for name, r in zip(names, records) if name in held_out]
  matrix = np.asarray(report['confusion_matrix'])
  assert report['labels'] == ['digits', 'letters', 'symbols']
  assert matrix.sum() == len(validation)
  assert matrix.sum(axis=1).tolist() == [sum(r['label'] == l for r in validation)
                                         for l in report['labels']]
  assert report['accuracy'] == pytest.approx(np.trace(matrix) / matrix.sum())
  assert report['accuracy'] >= 0.9  # three easy classes
  assert (run_dir / 'confusion_matrix.png').read_bytes()[:4] == b'\x89PNG'
  summary = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()
             if '"summary"' in l][-1]
  assert summary['accuracy'] == report['accuracy'] and summary['macro_f1'] == report['macro_f1']

  labels, probabilities = classify.predict(run_dir, [r['text'] for r in validation])
  assert probabilities.shape == (len(validation), 3)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  assert labels == [report['labels'][i] for i in probabilities.argmax(axis=1)]
  predicted = [report['labels'].index(l) for l in labels]
  true = [report['labels'].index(r['label']) for r in validation]
  assert confusion_matrix(true, predicted, 3).tolist() == report['confusion_matrix']
  with pytest.raises(UserError, match='text 1 is empty'):
    classify.predict(run_dir, ['123', ''])


@pytest.mark.slow
def test_unseen_label_stops_training_in_one_line(trained, capsys):
  tmp_path, _, records = trained
  names = [f'bad.jsonl:{i + 1}' for i in range(len(records))]
  held_out = sorted(validation_names(names, 0.25))
  records = [dict(r) for r in records]
  records[int(held_out[0].split(':')[1]) - 1]['label'] = 'unseen'
  (tmp_path / 'bad.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  run_dir = tmp_path / 'bad_run'
  flags = tiny_flags(tmp_path, run_dir, data__source=tmp_path / 'bad.jsonl',
                     data__validation_fraction=0.25, task__name='classify', model__kind='encoder')
  tmp_path.joinpath('bad_run').mkdir()
  assert_one_line_error(capsys, ['train'] + flags, "label 'unseen', which no training record",
                        run_dir)


@pytest.mark.slow
def test_a_classifier_starts_from_a_trained_decoder(trained):
  """task.init_from takes the decoder run's shape and weights: the backbone starts equal to
  its checkpoint, the head is new."""
  from train.checkpoint import checkpoint_dir, restore_latest
  from train.config import load_config
  from train.experiment import build_experiment
  tmp_path, _, _ = trained
  write_corpus(tmp_path)
  lm_dir = tmp_path / 'lm'
  assert launch.main(['train'] + tiny_flags(tmp_path, lm_dir, train__steps=5,
                                            model__d_model=48)) == 0
  overrides = [f'--config.{k}={v}' for k, v in {
      'data.source': tmp_path / 'labelled.jsonl', 'data.seq_len': 32,
      'data.validation_fraction': 0.25, 'task.name': 'classify', 'task.init_from': lm_dir,
      'model.kind': 'encoder', 'train.batch_size': 8}.items()]
  config = load_config('configs/tiny.py', overrides)
  exp = build_experiment(config, progress=False)
  assert config.model.kind == 'decoder' and config.model.d_model == 48  # the run's
  state = exp.init_state()
  lm_exp = build_experiment(load_config('configs/tiny.py', [
      f'--config.model.{k}={v}' for k, v in config.model.items()] + [
          '--config.data.seq_len=32', '--config.train.batch_size=8']), with_data=False)
  with lm_exp.mesh_context():
    lm_state, _, _ = restore_latest(checkpoint_dir(lm_dir), lm_exp.abstract_state)
  jax.tree.map(np.testing.assert_array_equal, state.params['backbone'], lm_state.params)
  assert set(state.params) == {'backbone', 'head'}


@pytest.mark.slow
def test_generate_and_serve_classify_with_the_trained_classifier(trained):
  """`generate` and `serve`'s /v1/classify on a real classifier run give `predict`'s labels."""
  tmp_path, run_dir, records = trained
  texts = [r['text'] for r in records[:5]]
  expected, _ = classify.predict(run_dir, texts)
  source, out = tmp_path / 'texts.jsonl', tmp_path / 'labels.jsonl'
  source.write_text(''.join(json.dumps({'text': t}) + '\n' for t in texts))
  assert launch.main(['generate', '--run_dir', str(run_dir), '--input', str(source),
                      '--output', str(out), '--batch_size', '2', '--no_progress']) == 0
  assert [json.loads(l)['label'] for l in out.read_text().splitlines()] == expected

  async def classify_all():
    async with TestClient(TestServer(make_app(load_engine(run_dir), wait_ms=50))) as client:
      answers = await asyncio.gather(*[client.post('/v1/classify', json={'text': t})
                                       for t in texts])
      results = [await a.json() for a in answers]
      wrong = await client.post('/v1/completions', json={'prompt': 'a'})
      health = await (await client.get('/health')).json()
      return results, wrong.status, await wrong.json(), health

  results, status, wrong, health = asyncio.run(classify_all())
  assert [r['label'] for r in results] == expected
  assert max(r['batch_size'] for r in results) > 1  # concurrent texts shared a batch
  assert status == 400 and 'POST to /v1/classify' in wrong['error']
  assert health['status'] == 'ok' and health['kind'] == 'classification'
