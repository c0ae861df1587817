"""How a classifier is judged: confusion matrix, accuracy, per-class and macro precision, recall
and F1, and a picture of the confusion matrix.

Rows of the confusion matrix are the true classes, columns the predicted ones. A class never
predicted has precision 0, a class absent from the data recall 0, and F1 is 0 where precision +
recall is 0 (scikit-learn's `zero_division=0`). Macro scores are plain means over every class
the classifier knows, present in the data or not.
"""

import json

import numpy as np

from storage import as_path


def confusion_matrix(true_ids, predicted_ids, n_classes: int) -> np.ndarray:
  """int64 [n_classes, n_classes]: entry (t, p) counts items of true class t predicted as p."""
  matrix = np.zeros((n_classes, n_classes), np.int64)
  np.add.at(matrix, (np.asarray(true_ids, np.int64), np.asarray(predicted_ids, np.int64)), 1)
  return matrix


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator, 0 where the denominator is 0."""
  numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
  return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def scores(matrix: np.ndarray, labels: list[str]) -> dict:
  """{accuracy, macro_precision, macro_recall, macro_f1, per_class: {label: {precision, recall,
  f1, support}}, confusion_matrix, labels} of a confusion matrix."""
  matrix = np.asarray(matrix, np.int64)
  correct = np.diag(matrix).astype(np.float64)
  support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
  precision, recall = _ratio(correct, predicted), _ratio(correct, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  return {
      'accuracy': float(correct.sum() / max(matrix.sum(), 1)),
      'macro_precision': float(precision.mean()),
      'macro_recall': float(recall.mean()),
      'macro_f1': float(f1.mean()),
      'per_class': {label: {'precision': float(precision[i]), 'recall': float(recall[i]),
                            'f1': float(f1[i]), 'support': int(support[i])}
                    for i, label in enumerate(labels)},
      'labels': list(labels),
      'confusion_matrix': matrix.tolist(),
  }


def format_scores(report: dict) -> str:
  """A table of the per-class scores, then the overall ones."""
  width = max([len(label) for label in report['labels']] + [5])
  lines = [f"{'class':<{width}}  precision  recall     f1  support"]
  for label, s in report['per_class'].items():
    lines.append(f"{label:<{width}}  {s['precision']:9.3f}  {s['recall']:6.3f}  {s['f1']:5.3f}  "
                 f"{s['support']:7d}")
  lines.append(f"accuracy {report['accuracy']:.3f}, macro precision "
               f"{report['macro_precision']:.3f}, recall {report['macro_recall']:.3f}, "
               f"F1 {report['macro_f1']:.3f}")
  return '\n'.join(lines)


def plot_confusion(matrix: np.ndarray, labels: list[str], path, title: str = '') -> None:
  """Writes the confusion matrix as a PNG: counts in the cells, rows normalised for colour."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  matrix = np.asarray(matrix)
  share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  size = 2.5 + 0.45 * len(labels)
  fig, ax = plt.subplots(figsize=(size + 1, size))
  image = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(len(labels)), labels, rotation=45, ha='right')
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  for (t, p), count in np.ndenumerate(matrix):
    ax.text(p, t, str(count), ha='center', va='center', fontsize=8,
            color='white' if share[t, p] > 0.5 else 'black')
  fig.colorbar(image, ax=ax, label='share of the true class')
  ax.set_title(title)
  fig.tight_layout()
  with as_path(path).open('wb') as f:
    fig.savefig(f, format='png', dpi=110)
  plt.close(fig)


def write_report(report: dict, path) -> None:
  as_path(path).write_text(json.dumps(report, indent=2) + '\n')
