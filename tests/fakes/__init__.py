"""Fakes held to real APIs: a `tensorrt` module generated from the API dumps, and a CUDA layer in numpy."""
