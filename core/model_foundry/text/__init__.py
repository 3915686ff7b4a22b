"""The text modality: language models, tokenizers, text collators, text data and the
transformers adapter — one modality among several, beside the modality-neutral core.

Importing this package is cheap; its modules import torch, tokenizers or transformers only
where they need them.
"""
