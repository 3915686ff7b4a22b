"""Which named terms of a model's output training logs: ``*_loss`` parts and ``*_perplexity`` usage measures."""

from __future__ import annotations

import json

import attrs

from model_foundry import cli
from model_foundry.fields import option, positive
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder
from model_foundry.testing import isolated_registry


@attrs.frozen
class TermsConfig:
    width: int = option(2, doc="points' dimension", validator=positive)


def build_terms_model(model_config):
    import torch
    from torch import nn

    from model_foundry.protocol import FoundryModel, ModelOutput

    class TermsModel(FoundryModel):
        def __init__(self, config):
            super().__init__(config)
            self.centre = nn.Parameter(torch.zeros(config.width))

        def forward(self, vectors, **_):
            fit = (vectors - self.centre).square().sum(-1).mean()
            return ModelOutput(
                loss=fit, fit_loss=fit, usage_perplexity=torch.tensor(3.0), diagnostic=torch.tensor(7.0),
            )

    return TermsModel(model_config)


class TermsPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        return [ArchitectureSchema("terms", TermsConfig, capabilities=Capabilities(modality="vector"))]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("terms", build_terms_model)]


def test_loss_parts_and_perplexities_are_logged_and_other_terms_are_not(tmp_path):
    config = {
        "model": {"architecture": "terms"},
        "data": {"kind": "toy", "num_samples": 200, "validation_fraction": 0},
        "training": {"max_steps": 4, "batch_size": 8, "log_every": 2, "eval_every": 0, "save_every": 0,
                     "output_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    with isolated_registry(TermsPlugin()):
        assert cli.main(["train", str(path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        assert record["usage_perplexity"] == 3.0 and record["fit_loss"] == record["loss"]
        assert "diagnostic" not in record
