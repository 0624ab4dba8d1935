"""Triton Inference Server: the served model's shape (model.py) and the remote backend (client.py)."""
