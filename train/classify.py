"""A trained classifier's report and predictions.

`final_report(exp, params, run_dir)` predicts every validation record at the end of a
classification run and writes `classification.json` (accuracy, macro and per-class precision,
recall, F1, the confusion matrix, the labels) and `confusion_matrix.png` into the run directory;
the loop puts its headline numbers into the summary record of metrics.jsonl.

`predict(run_dir, texts) -> (labels, probabilities)` classifies texts with a run directory's
latest good checkpoint: the predicted label of each text and the [N, n_classes] class
probabilities, columns in the order of `labels_of(run_dir)` (the training labels, sorted,
recorded in `labels.json` when training starts). It needs neither the labelled file nor a
`task.init_from` run any more.
"""

import functools
import json

import jax
import numpy as np

from errors import UserError
from storage import as_path, write_atomically
from train import checkpoint, labelled
from train.classification_metrics import (confusion_matrix, format_scores, plot_confusion,
                                          scores, write_report)

REPORT_FILE = 'classification.json'
CONFUSION_PNG = 'confusion_matrix.png'
LABELS_FILE = 'labels.json'


@functools.partial(jax.jit, static_argnames=('model', 'objective'))
def _probabilities(params, rows_BxLp1, *, model, objective):
  batch = objective.examples(rows_BxLp1, jax.random.PRNGKey(0))
  logits_BxC = model.apply({'params': params}, *objective.model_inputs(batch))
  return jax.nn.softmax(logits_BxC, axis=-1)


def probabilities(exp, params, rows: np.ndarray) -> np.ndarray:
  """float32 [N, n_classes] for packed rows (train/labelled.py), batch_size rows at a time."""
  size = exp.config.train.batch_size
  out = []
  with exp.mesh_context():
    for first in range(0, len(rows), size):
      chunk = rows[first:first + size]
      batch = np.full((size, rows.shape[1]), labelled.PAD_ID, np.int32)
      batch[:len(chunk)] = chunk
      probs = _probabilities(params, batch, model=exp.model, objective=exp.objective)
      out.append(np.asarray(jax.device_get(probs))[:len(chunk)])
  return np.concatenate(out) if out else np.zeros((0, exp.model.n_classes), np.float32)


def final_report(exp, params, run_dir) -> dict:
  """Scores the validation split, writes the report and PNG (process 0); returns the headline
  numbers for the run's summary."""
  rows, labels = exp.labelled.validation_rows, exp.labelled.labels
  predicted = probabilities(exp, params, rows).argmax(axis=1)
  report = scores(confusion_matrix(rows[:, -1], predicted, len(labels)), labels)
  if jax.process_index() == 0:
    run_dir = as_path(run_dir)
    write_report(report, run_dir / REPORT_FILE)
    plot_confusion(np.asarray(report['confusion_matrix']), labels, run_dir / CONFUSION_PNG,
                   f"validation: accuracy {report['accuracy']:.3f}, macro F1 "
                   f"{report['macro_f1']:.3f} ({len(rows)} texts)")
  return {'accuracy': report['accuracy'], 'macro_precision': report['macro_precision'],
          'macro_recall': report['macro_recall'], 'macro_f1': report['macro_f1'],
          'validation_texts': int(len(rows)), 'scores_table': format_scores(report)}


def write_labels(run_dir, labels: list[str]) -> None:
  """Records the class names in the run directory (at the start of training)."""
  write_atomically(as_path(run_dir) / LABELS_FILE, json.dumps(list(labels)) + '\n')


def labels_of(run_dir) -> list[str]:
  """The class names of a classification run, in the column order of `predict`."""
  path = as_path(run_dir) / LABELS_FILE
  if not path.exists():
    raise UserError(f'{run_dir} has no {LABELS_FILE}; pass the run directory of a '
                    'task.name=classify run')
  return json.loads(path.read_text())


def load_classifier(run_dir):
  """(experiment, params, tokenizer, labels) of a classification run's latest good checkpoint;
  needs neither the labelled file nor the run it started from."""
  from train.config import validate  # pylint: disable=import-outside-toplevel
  from train.experiment import build_experiment  # pylint: disable=import-outside-toplevel
  from train.run_dir import load_run_config  # pylint: disable=import-outside-toplevel
  run_dir = as_path(run_dir)
  config = load_run_config(run_dir)
  if config.task.name != 'classify':
    raise UserError(f'{run_dir} trained task {config.task.name!r}, not a classifier; pass the '
                    'run directory of a task.name=classify run')
  labels = labels_of(run_dir)
  config.task.init_from = ''  # config.json already holds the backbone's shape; weights below
  validate(config)
  exp = build_experiment(config, with_data=False, progress=False, n_classes=len(labels))
  with exp.mesh_context():
    state, _, _ = checkpoint.restore_latest(checkpoint.checkpoint_dir(run_dir),
                                            exp.abstract_state)
  if state is None:
    raise UserError(f'{run_dir} has no checkpoint yet; train it first')
  return exp, state.params, labelled.classify_tokenizer(config), labels


def predict(run_dir, texts: list[str], loaded=None) -> tuple[list[str], np.ndarray]:
  """(predicted label per text, float32 [N, n_classes] probabilities, columns in the order of
  `labels_of(run_dir)`) from the run's latest good checkpoint; `loaded` (what
  `load_classifier(run_dir)` returns) saves rebuilding the model for every call."""
  exp, params, tokenizer, labels = loaded or load_classifier(run_dir)
  rows = labelled.encode_texts(tokenizer, texts, exp.config.data.seq_len)
  probs = probabilities(exp, params, rows)
  return [labels[i] for i in probs.argmax(axis=1)], probs
