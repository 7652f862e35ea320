"""evaluate --json and predict --json: one JSON document on stdout, the numbers the
functions return; train through the command line refuses what it cannot use."""
import json

import tensorflow_datasets as tfds
from PIL import Image

from model import evaluate
from pipelines import cli


def test_evaluate_json_is_the_metrics_file(trained, capsys):
    _, model_dir, _ = trained
    assert cli.main(["evaluate", "--model_dir", model_dir, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"labels", "dataset_dir", "validation", "test"}
    assert metrics == json.load(open(f"{model_dir}/metrics.json"))


def test_predict_json_names_the_likeliest_label_per_image(trained, tmp_path, capsys):
    dataset, model_dir, _ = trained
    paths = []
    for i, example in enumerate(tfds.builder_from_directory(dataset).as_dataset(split="test")
                                .take(2)):
        paths.append(str(tmp_path / f"crop{i}.png"))
        Image.fromarray(example["image"].numpy()).save(paths[-1])
    assert cli.main(["predict", model_dir, *paths, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_dir"] == model_dir and [p["image"] for p in out["predictions"]] == paths
    for p, (_, probs) in zip(out["predictions"], evaluate.predict(model_dir, paths)):
        assert p["probabilities"] == probs and p["label"] == max(probs, key=probs.get)


def test_train_refuses_a_finetune_without_a_pretrained_base_in_one_line(dataset, tmp_path, capsys):
    assert cli.main(["train", "--dataset_dir", dataset, "--model_dir", str(tmp_path),
                     "--fine_tune_layers", "3"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --fine_tune_layers needs a pretrained base")
