"""The classifier: `make_model(input_shape, num_classes, ...)`.

The model takes raw pixel values (0..255, any numeric dtype): augmentation (training only)
and rescaling are layers inside it, so a saved model.keras serves photos as they come.
For fine-tuning, the pretrained base is built frozen and called in inference mode
(`training=False`, as in Keras' transfer-learning guide), so its BatchNorm statistics
stay those of the pretraining data when `unfreeze_top` later opens its top layers.
"""
from __future__ import annotations

import os

import keras
from keras import layers


class OfflineWeightsError(RuntimeError):
    """ImageNet weights were asked for and cannot be downloaded."""


def augmentation(seed: int) -> keras.Sequential:
    """Random flip, rotation, zoom, translation and contrast; active only in training."""
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.05, seed=seed + 1),
        layers.RandomZoom(0.1, seed=seed + 2),
        layers.RandomTranslation(0.1, 0.1, seed=seed + 3),
        layers.RandomContrast(0.1, seed=seed + 4),
    ], name="augmentation")


def _simple_cnn(x, dropout: float, seed: int):
    """The article's network: three conv blocks, one dense layer, dropout."""
    x = layers.Rescaling(1.0 / 255)(x)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    return layers.Dropout(dropout, seed=seed)(x)


def base_of(model: keras.Model) -> keras.Model:
    """The pretrained base inside a transfer model (named after the model's arch)."""
    return model.get_layer(f"{model.name}_base")


def unfreeze_top(model: keras.Model, layers_to_train: int) -> list[str]:
    """Make the base's top `layers_to_train` layers trainable, except BatchNorm layers, which
    stay frozen (keras-io's EfficientNet fine-tuning example does the same); the rest of the
    base stays frozen. Returns the names of the base layers that now train."""
    base = base_of(model)
    base.trainable = True
    top = base.layers[len(base.layers) - layers_to_train:] if layers_to_train > 0 else []
    opened = {id(layer) for layer in top if not isinstance(layer, layers.BatchNormalization)}
    for layer in base.layers:
        layer.trainable = id(layer) in opened
    return [layer.name for layer in base.layers if id(layer) in opened]


def _backbone(arch: str, input_shape, weights: str):
    """A keras.applications backbone without its top; ImageNet weights need the internet."""
    ctor = {"mobilenet_v2": keras.applications.MobileNetV2,
            "efficientnet_b0": keras.applications.EfficientNetB0}[arch]
    want = "imagenet" if weights == "imagenet" else None
    try:
        base = ctor(input_shape=input_shape, include_top=False, weights=want, pooling="avg",
                    name=f"{arch}_base")
    except Exception as err:  # keras raises URLError/HTTPError/ValueError wrappers offline
        if want == "imagenet":
            raise OfflineWeightsError(
                f"could not download ImageNet weights for {arch} ({type(err).__name__}: {err}). "
                f"Without internet, use --weights none, or --weights PATH to a weights file "
                f"saved on a machine that has them (model.save_weights('x.weights.h5')).") from err
        raise
    return base


def make_model(input_shape: tuple[int, int, int], num_classes: int, arch: str = "simple_cnn",
               weights: str = "none", augment: bool = True, dropout: float = 0.5,
               seed: int = 0, frozen_base: bool = False) -> keras.Model:
    """Build the classifier. Two classes get one sigmoid unit (as in the article), more get
    a softmax. `weights` may be a path to weights of the same architecture. `frozen_base`
    (transfer archs): the base does not train and runs in inference mode, for fine-tuning."""
    inputs = keras.Input(shape=input_shape, name="image")  # pixel values 0..255
    x = inputs
    if augment:
        x = augmentation(seed)(x)
    if arch == "simple_cnn":
        x = _simple_cnn(x, dropout, seed + 5)
    else:
        if arch == "mobilenet_v2":
            x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(x)  # MobileNetV2 wants [-1, 1]
        base = _backbone(arch, input_shape, weights)  # EfficientNet rescales itself
        if frozen_base:
            base.trainable = False
        x = layers.Dropout(dropout, seed=seed + 5)(base(x, training=False) if frozen_base
                                                  else base(x))
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="probability")(x)
    else:
        outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=arch)
    if weights not in ("none", "imagenet"):
        if not os.path.exists(weights):
            raise FileNotFoundError(f"--weights {weights}: no such file")
        model.load_weights(weights)
    return model


def probabilities(predictions, num_classes: int):
    """Model outputs -> per-class probabilities, shape (n, num_classes)."""
    import numpy as np
    p = np.asarray(predictions, dtype=np.float64)
    if num_classes == 2:
        p = p.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return p
