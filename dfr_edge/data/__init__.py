"""Datasets and image I/O (torch-free: the lean runtime reads images through here too)."""
