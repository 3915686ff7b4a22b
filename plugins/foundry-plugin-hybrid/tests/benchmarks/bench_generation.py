"""Greedy generation with the decoder's key/value cache against full recomputation.

Run: python plugins/foundry-plugin-hybrid/tests/benchmarks/bench_generation.py
Prints tokens per second for both and their ratio, measured in the same run (the
reference is the core's default ``next_token_logits``, which reruns the whole sequence).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import model_foundry  # noqa: E402
from model_foundry.config import load_model_config  # noqa: E402
from model_foundry.text.modeling import LanguageModel  # noqa: E402

PROMPT, NEW_TOKENS = 16, 240


class Recomputing:
    """The same model, generating through the base class's full-recompute ``next_token_logits``."""

    def __init__(self, model: LanguageModel):
        self.model = model

    def __call__(self, input_ids: torch.Tensor, state=None):
        return LanguageModel.next_token_logits(self.model, input_ids, state)


def tokens_per_second(model: LanguageModel, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=NEW_TOKENS)
    return NEW_TOKENS / (time.perf_counter() - start), out


def main() -> None:
    config = load_model_config(
        {"architecture": "hybrid", "preset": "tiny", "vocab_size": 1000, "hidden_size": 128, "num_heads": 4,
         "intermediate_size": 512, "num_layers": 4, "max_length": PROMPT + NEW_TOKENS}
    )
    torch.manual_seed(0)
    model = model_foundry.create_model(config).eval()
    prompt = torch.randint(0, 1000, (1, PROMPT))
    cached_speed, cached = tokens_per_second(model, prompt)
    model.next_token_logits = Recomputing(model)  # instance attribute: this run only
    full_speed, full = tokens_per_second(model, prompt)
    assert torch.equal(cached, full), "cached and recomputed greedy generations differ"
    print(f"prompt {PROMPT}, {NEW_TOKENS} new tokens, hidden 128, 4 layers, 1 thread")
    print(f"kv cache:        {cached_speed:8.1f} tokens/s")
    print(f"full recompute:  {full_speed:8.1f} tokens/s")
    print(f"speed-up:        {cached_speed / full_speed:8.2f}x")


if __name__ == "__main__":
    main()
