"""Train the digits classifier behind ``digits_fid`` and ``digits_score`` and write its weights.

    python core/model_foundry/assets/train_digits_classifier.py

Deterministic (fixed seeds, one thread, full-batch steps): a few seconds on a CPU. It sees
only the training split of the default ``digits`` data (validation_fraction 0.2, seed 0), so
that split's validation images are held out from it.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from model_foundry.datasets import DataContext
from model_foundry.datasets.config import DigitsDataConfig
from model_foundry.datasets.images import load_digits
from model_foundry.metrics import DIGITS_CLASSIFIER, digits_classifier

STEPS = 300
# A little label smoothing keeps the classifier from being certain about everything, off-manifold
# samples included, so that its class-probability score separates samples of different quality:
# held-out digits score about 8.5 of 10, samples of one Gaussian fitted to the digits about 4.2.
LABEL_SMOOTHING = 0.01


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_digits(DigitsDataConfig(), DataContext(cache_dir=""))
    train = data.train.batch(range(len(data.train)))
    validation = data.validation.batch(range(len(data.validation)))
    model = digits_classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    for _ in range(STEPS):
        loss = torch.nn.functional.cross_entropy(
            model(train["pixel_values"]), train["class_labels"], label_smoothing=LABEL_SMOOTHING
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(validation["pixel_values"]).argmax(-1) == validation["class_labels"]).float().mean()
    print(f"train loss {loss.item():.4f}, held-out accuracy {accuracy.item():.4f}")
    partial = DIGITS_CLASSIFIER + ".partial"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, partial, metadata={"format": "pt"})
    os.replace(partial, DIGITS_CLASSIFIER)


if __name__ == "__main__":
    main()
