"""The exported SavedModel serves JPEG bytes without the project, as `predict` classifies."""
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from model import data, evaluate, export

# Loads the SavedModel where the project cannot be imported (-I ignores PYTHONPATH; the
# editable install is blocked by name), classifies the files named on the command line.
SERVE = """
import json, sys
for name in ("model", "pipelines", "schemas"):
    sys.modules[name] = None
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(images=tf.constant([open(p, "rb").read() for p in sys.argv[2:]]))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}, default=bytes.decode))
"""


def test_the_savedmodel_classifies_test_crops_like_predict(trained, tmp_path, capsys):
    dataset, model_dir, _ = trained
    serving = str(tmp_path / "serving")
    assert export.main(["--model_dir", model_dir, "--output", serving]) == 0
    assert "serving_default" in capsys.readouterr().out
    # The test split's crops, as the JPEG bytes stored in the shards.
    shards = [os.path.join(dataset, f) for f in
              tfds.builder_from_directory(dataset).info.splits["test"].filenames]
    records = next(iter(tf.data.TFRecordDataset(shards).batch(12)))
    paths = []
    for i, jpeg in enumerate(data.parse(records)["image"].numpy()):
        paths.append(str(tmp_path / f"crop{i}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(jpeg)
    run = subprocess.run([sys.executable, "-I", "-c", SERVE, serving, *paths],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    expected = evaluate.predict(model_dir, paths)
    labels = ["Hamburger", "Sandwich"]
    assert served["classes"] == [labels] * len(paths)
    for (_, probs), label, row in zip(expected, served["label"], served["probabilities"]):
        assert label == max(probs, key=probs.get)
        np.testing.assert_allclose(row, [probs[name] for name in labels], atol=1e-5)


def test_export_refuses_to_overwrite_and_needs_a_finished_model(trained, tmp_path, capsys):
    _, model_dir, _ = trained
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert export.main(["--model_dir", model_dir, "--output", str(tmp_path / "taken")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert export.main(["--model_dir", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "train first" in capsys.readouterr().err
