"""`open-sandwiches evaluate` and `predict`: honest numbers and a look at the mistakes.

    open-sandwiches evaluate --model_dir out/model [--dataset_dir out/hamburger_sandwich/1.0.0]
    open-sandwiches predict out/model photo1.jpg photo2.png

evaluate writes metrics.json (accuracy, per-class precision, recall, F1 and support, and
the confusion matrix, for validation and test), confusion_matrix.png and mistakes.png
(the most confidently wrong test images: the article's "under-confident on hamburgers"
analysis, done for you).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

# model.data, model.network and model.plots import TensorFlow: they are imported where
# they are used, so `evaluate --help` and a missing model folder answer at once.
from schemas.records import SPLITS


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(labels)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall),
                            "f1": float(f1), "support": int(actual)}
    total = matrix.sum()
    return {"accuracy": float(np.trace(matrix) / total) if total else 0.0,
            "examples": int(total), "per_class": per_class,
            "confusion_matrix": matrix.tolist()}


def _load(model_dir: str):
    """The model, its labels.json and its config.json; checks the folder before loading
    TensorFlow."""
    if not os.path.isfile(os.path.join(model_dir, "labels.json")):
        raise FileNotFoundError(f"{model_dir} holds no trained model (no labels.json): "
                                f"train one with `open-sandwiches train --model_dir "
                                f"{model_dir} ...`")
    import keras
    with open(os.path.join(model_dir, "labels.json")) as f:
        meta = json.load(f)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    return keras.models.load_model(os.path.join(model_dir, "model.keras")), meta, config


def evaluate(model_dir: str, dataset_dir: str = "", top_mistakes: int = 12) -> dict:
    """Evaluate on validation and test; write metrics.json and the plots; return metrics."""
    from model import data, network, plots
    model, meta, config = _load(model_dir)
    dataset_dir = dataset_dir or config["dataset_dir"]
    if not os.path.isfile(os.path.join(dataset_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{dataset_dir} is not a dataset written by build (it has "
                                f"no dataset_info.json)")
    labels, size = meta["labels"], meta["image_size"]
    info = data.DatasetInfo.load(dataset_dir)
    if list(info.labels) != labels:
        raise ValueError(f"the model's labels {labels} differ from the dataset's {list(info.labels)}")
    results: dict = {"labels": labels, "dataset_dir": dataset_dir}
    for split in SPLITS[1:]:
        if not info.split_sizes.get(split):
            continue
        y_true, y_prob, wrong = [], [], []
        for images, targets in data.make_dataset(dataset_dir, split, size, 64, False,
                                                 cache="false"):
            probs = network.probabilities(model.predict_on_batch(images), len(labels))
            for image, target, p in zip(images.numpy(), targets.numpy(), probs):
                y_true.append(int(target))
                y_prob.append(p)
                if split == "test" and int(np.argmax(p)) != int(target):
                    wrong.append((float(p.max()), image, int(target), int(np.argmax(p))))
        y_true_a, y_prob_a = np.array(y_true), np.array(y_prob)
        results[split] = classification_metrics(y_true_a, y_prob_a.argmax(axis=1), labels)
        results[split]["mean_confidence_when_right"] = {
            label: float(y_prob_a[(y_true_a == i) & (y_prob_a.argmax(1) == i), i].mean())
            if ((y_true_a == i) & (y_prob_a.argmax(1) == i)).any() else None
            for i, label in enumerate(labels)}
        if split == "test" or "test" not in results:
            plots.confusion_matrix(np.array(results[split]["confusion_matrix"]), labels,
                                   os.path.join(model_dir, "confusion_matrix.png"),
                                   f"{split}: accuracy {results[split]['accuracy']:.3f}")
        if split == "test":
            wrong.sort(key=lambda w: -w[0])
            plots.mistakes([w[1] for w in wrong[:top_mistakes]],
                           [f"true {labels[t]}\npredicted {labels[p]} ({c:.2f})"
                            for c, _, t, p in wrong[:top_mistakes]],
                           os.path.join(model_dir, "mistakes.png"))
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def format_metrics(results: dict) -> str:
    lines = []
    for split in SPLITS[1:]:
        if split not in results:
            continue
        r = results[split]
        lines.append(f"{split}: accuracy {r['accuracy']:.3f} on {r['examples']} examples")
        for label, m in r["per_class"].items():
            lines.append(f"  {label:<24} precision {m['precision']:.3f}  recall {m['recall']:.3f}"
                         f"  f1 {m['f1']:.3f}  support {m['support']}")
    return "\n".join(lines)


def predict(model_dir: str, paths: list[str]) -> list[tuple[str, dict[str, float]]]:
    """Class probabilities for image files, resized to the model's input as in training."""
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such image file: {path}")
    model, meta, _ = _load(model_dir)
    import tensorflow as tf

    from model import data, network
    labels, size = meta["labels"], meta["image_size"]
    out = []
    for path in paths:
        image = data.load_image(tf.io.read_file(path), size)[tf.newaxis]
        probs = network.probabilities(model.predict_on_batch(image), len(labels))[0]
        out.append((path, {label: float(p) for label, p in zip(labels, probs)}))
    return out


def command(args) -> int:
    """`open-sandwiches evaluate` with parsed flags."""
    results = evaluate(args.model_dir, args.dataset_dir)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(format_metrics(results))
    print(f"wrote metrics.json, confusion_matrix.png, mistakes.png to {args.model_dir}")
    return 0


def predict_command(args) -> int:
    """`open-sandwiches predict` with parsed flags; --json: {"model_dir", "predictions":
    [{"image", "label", "probabilities": {label: p}}]}."""
    results = predict(args.model_dir, args.images)
    if args.json:
        print(json.dumps({"model_dir": args.model_dir, "predictions": [
            {"image": path, "label": max(probs, key=probs.get), "probabilities": probs}
            for path, probs in results]}, indent=2))
        return 0
    for path, probs in results:
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        print(f"{path}: " + ", ".join(f"{label} {p:.3f}" for label, p in ranked))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("evaluate", argv)


def predict_main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("predict", argv)


if __name__ == "__main__":
    sys.exit(main())
