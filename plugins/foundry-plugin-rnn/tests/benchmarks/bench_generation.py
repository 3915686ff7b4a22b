"""Greedy generation carrying the recurrent state against full recomputation.

Run: python plugins/foundry-plugin-rnn/tests/benchmarks/bench_generation.py
Prints tokens per second for short and long continuations, for the LSTM's stateful
``next_token_logits`` and for the core's default one (which reruns the whole sequence),
measured in the same run, and their ratio. The stateful speed should not depend on the
length; the recomputing one falls as the sequence grows.
"""

from __future__ import annotations

import functools
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import model_foundry  # noqa: E402
from model_foundry.config import load_model_config  # noqa: E402
from model_foundry.text.modeling import LanguageModel  # noqa: E402

PROMPT = 16
LENGTHS = (64, 256)


def tokens_per_second(model: LanguageModel, prompt: torch.Tensor, new_tokens: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=new_tokens)
    return new_tokens / (time.perf_counter() - start), out


def main() -> None:
    config = load_model_config(
        {"architecture": "lstm", "preset": "tiny", "vocab_size": 1000, "rnn": {"hidden_size": 256, "embedding_size": 256}}
    )
    torch.manual_seed(0)
    stateful = model_foundry.create_model(config).eval()
    recomputing = model_foundry.create_model(config).eval()
    recomputing.load_state_dict(stateful.state_dict())
    recomputing.next_token_logits = functools.partial(LanguageModel.next_token_logits, recomputing)
    prompt = torch.randint(0, 1000, (1, PROMPT))
    for model in (stateful, recomputing):  # warm-up: first calls pay for allocation
        model.generate(prompt, max_new_tokens=8)
    print(f"lstm, hidden 256, 2 layers, prompt {PROMPT}, 1 thread")
    print(f"{'new tokens':>10}  {'stateful tok/s':>14}  {'recompute tok/s':>15}  {'speed-up':>8}")
    for new_tokens in LENGTHS:
        fast, fast_out = tokens_per_second(stateful, prompt, new_tokens)
        slow, slow_out = tokens_per_second(recomputing, prompt, new_tokens)
        assert torch.equal(fast_out, slow_out), "stateful and recomputed greedy generations differ"
        print(f"{new_tokens:>10}  {fast:>14.1f}  {slow:>15.1f}  {fast / slow:>7.2f}x")


if __name__ == "__main__":
    main()
