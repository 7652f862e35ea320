"""`open-sandwiches export`: a trained model as a SavedModel that serves encoded images.

    open-sandwiches export --model_dir out/model --output out/serving

The serving signature (`serving_default`) takes a batch of encoded images (JPEG, or PNG:
a 1-D tf.string tensor named `images`), decodes and resizes them exactly as `predict`
does, and returns `label` (the likeliest class name per image), `probabilities`
(batch x classes) and `classes` (the class names, one row per image, in the order of
the probabilities). The labels are constants inside the graph, so nothing but
TensorFlow is needed to serve it:

    import tensorflow as tf
    serve = tf.saved_model.load("out/serving").signatures["serving_default"]
    out = serve(images=tf.constant([open("lunch.jpg", "rb").read()]))
    out["label"], out["probabilities"]
"""
from __future__ import annotations

import json
import os
import shutil
import sys


def serving_function(model, labels: list[str], image_size: int):
    """encoded images -> {label, probabilities, classes}, traced into the SavedModel."""
    import tensorflow as tf

    from model import data
    names = tf.constant(labels)

    def serve(images):
        pixels = tf.map_fn(lambda b: data.load_image(b, image_size), images,
                           fn_output_signature=tf.TensorSpec((image_size, image_size, 3),
                                                             tf.float32))
        scores = tf.cast(model(pixels, training=False), tf.float32)
        if len(labels) == 2:  # one sigmoid unit: the probability of the second class
            scores = tf.concat([1.0 - scores, scores], axis=1)
        return {"label": tf.gather(names, tf.argmax(scores, axis=1)),
                "probabilities": scores,
                "classes": tf.tile(names[tf.newaxis], [tf.shape(images)[0], 1])}

    return serve


def export(model_dir: str, output: str, overwrite: bool = False) -> str:
    """Write the SavedModel of model_dir's model.keras to `output`; return `output`.
    The inputs are checked before TensorFlow loads."""
    model_path = os.path.join(model_dir, "model.keras")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path} not found: train first (a killed run has no "
                                f"model yet: rerun the same train command to finish it)")
    if os.path.exists(output) and os.listdir(output):
        if not overwrite:
            raise ValueError(f"{output} is not empty; pass --overwrite to replace it")
        shutil.rmtree(output)
    import keras
    import tensorflow as tf
    with open(os.path.join(model_dir, "labels.json")) as f:
        meta = json.load(f)
    model = keras.models.load_model(model_path)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default",
                         serving_function(model, meta["labels"], meta["image_size"]),
                         input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    archive.write_out(output, verbose=False)
    return output


def command(args) -> int:
    """`open-sandwiches export` with parsed flags."""
    path = export(args.model_dir, args.output, args.overwrite)
    print(f"exported {args.model_dir} to {path} (signature serving_default: images -> "
          f"label, probabilities, classes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("export", argv)


if __name__ == "__main__":
    sys.exit(main())
