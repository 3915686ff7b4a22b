"""Shared encoder and decoder networks for generative plugins (VAEs, GANs, EBMs).

``networks.config`` holds the attrs config blocks (no torch: a plugin's ``plugin.py`` may import
it); ``networks.modules`` builds the torch modules from them. See docs/networks.md.
"""
