"""Shared fixtures: generated catalogs and the real rows in tests/data."""
from __future__ import annotations

import os

import pytest

from pipelines.demo import catalog

DATA = os.path.join(os.path.dirname(__file__), "data")


def data_path(*parts: str) -> str:
    return os.path.join(DATA, *parts)


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory) -> catalog.CatalogFiles:
    """60 photos of Hamburger and Sandwich with distractors and 3 orphan boxes (V7, LF)."""
    out = tmp_path_factory.mktemp("catalog")
    return catalog.write_catalog(str(out), ["Hamburger", "Sandwich"], n_images=60, seed=7,
                                 orphan_boxes=3)


def make_pipeline():
    """A TestPipeline on the offline in-process runner (DirectRunner would try Prism first)."""
    from apache_beam.testing.test_pipeline import TestPipeline
    from pipelines.options import LOCAL_RUNNER
    return TestPipeline(runner=LOCAL_RUNNER)
