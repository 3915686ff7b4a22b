"""Autoregressive models with an exact likelihood: ``pixelcnn``, ``wavenet`` and ``transformer``."""
