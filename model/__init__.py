"""The Keras trainer. Never imports Apache Beam."""
