"""configs/performer-decoder.yaml trains with the core's loop, which drives the feature redraws."""

from __future__ import annotations

import pathlib

import torch
from foundry_plugin_performer.attention import FavorAttention

from model_foundry import load, load_config
from model_foundry.training.loop import train

CONFIG = pathlib.Path(__file__).parents[3] / "configs" / "performer-decoder.yaml"
TEXT = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n" * 40


def test_decoder_config_trains_and_the_loop_redraws_on_schedule(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    redraws = []
    original = FavorAttention.redraw_projection

    def counting(self, generator=None):
        redraws.append(self)
        original(self, generator)

    monkeypatch.setattr(FavorAttention, "redraw_projection", counting)
    overrides = [
        f"data.train_files=[{corpus}]", f"data.validation_files=[{corpus}]", "data.block_size=32",
        "model.decoder.d_model=32", "model.decoder.num_layers=2", "model.decoder.nb_features=16",
        "model.decoder.feature_redraw_interval=2", "tokenizer.tokenizer_type=char", "tokenizer.min_frequency=1",
        "training.max_steps=5", "training.batch_size=4", "training.warmup_steps=1", "training.eval_every=0",
        "training.save_every=0", "training.log_every=5", f"training.output_dir={tmp_path / 'run'}",
    ]
    result = train(load_config(CONFIG, overrides), overrides=tuple(overrides))
    assert torch.isfinite(torch.tensor(result.last_metrics["loss"]))
    # Steps 2 and 4, in each of the two layers; the loop's calls replace the model's own counting.
    assert len(redraws) == 2 * 2 and len({id(module) for module in redraws}) == 2
    model = load(result.final)
    prompt = torch.tensor([[1, 2, 3]])
    assert model.generate(prompt, max_new_tokens=4).shape == (1, 7)
