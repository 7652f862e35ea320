"""The open-sandwiches Beam job: one module per stage, each a PTransform over a pure core."""
import os

# TensorFlow's C++ start-up lines (CUDA probing, CPU features) drown the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
