"""The open-sandwiches Beam job: one module per stage, each a PTransform over a pure core."""
