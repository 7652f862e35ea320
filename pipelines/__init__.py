"""The open-sandwiches Beam job: one module per stage, each a PTransform over a pure core.

The naming rule: `<stage>.py` is the stage's pure core (plain functions and classes on
Arrow batches, bytes and records, no Beam; tested on its own), and `<stage>_stage.py` holds
the Beam transforms that run it (scan/scan_stage, join/join_stage, fetch/fetch_stage,
crop/crop_stage, write/write_stage, failures/failures_stage). `plan.py` and `build.py`
wire the stages into the two jobs.

`__version__` is the tool's one version: setup.py reads it, `open-sandwiches --version`
prints it and build_report.json records it.
"""
import os

__version__ = "0.1.0"

# TensorFlow's C++ logging (CUDA probing, CPU features, "failed call to cuInit" as an
# error on machines without a GPU) drowns the tool's own output; `--verbose` turns it on
# again (pipelines/command.py). A value the user set is left alone.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipelines import tfquiet  # noqa: E402  (after the variable: TensorFlow reads it once)

tfquiet.install()
