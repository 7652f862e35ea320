"""Shared fixtures for the trainer's tests: a dataset built by the real pipeline from
generated photos, and a model trained on it."""
import os

import pytest

from model import config as train_config
from model import train
from pipelines import build
from pipelines.demo import catalog, server


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """160 photos of Hamburger (bands) and Sandwich (stripes), built at 64 px."""
    out = tmp_path_factory.mktemp("train_data")
    os.makedirs(out / "photos")
    srv = server.ImageServer(str(out / "photos"))
    files = catalog.write_catalog(str(out), ["Hamburger", "Sandwich"], 160, seed=4,
                                  photos=True, photo_size=(320, 240), base_url=srv.base_url)
    with srv:
        assert build.main(["--classes", "Hamburger", "Sandwich", *files.flags(),
                           "--output_dir", str(out / "ds"), "--allow_private_network",
                           "--cache_dir", str(out / "cache"), "--image_source", "original",
                           "--image_size", "64", "--quiet"]) == 0
    return str(out / "ds" / "hamburger_sandwich" / "1.0.0")


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("model"))
    cfg = train_config.TrainConfig(dataset_dir=dataset, model_dir=model_dir, epochs=8,
                                   patience=4, seed=1)
    summary = train.train(cfg)
    return dataset, model_dir, summary
