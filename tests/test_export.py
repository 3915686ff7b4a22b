"""`foundry export`: the architecture's plugin exports, the write is atomic, user errors exit 2."""

from __future__ import annotations

import os

import pytest
import torch
from toy_plugin import ToyPlugin

import model_foundry
from model_foundry.cli import main
from model_foundry.config import load_model_config
from model_foundry.extensions import EMAConfig, ExponentialMovingAverage, save_extension_states
from model_foundry.plugin import hookimpl
from model_foundry.records import Exporter
from model_foundry.testing import isolated_registry


def write_then_fail(model, directory, tokenizer=None):
    with open(os.path.join(directory, "partial.bin"), "w") as handle:
        handle.write("half")
    raise RuntimeError("disk full")


def write_marker(model, directory, tokenizer=None):
    with open(os.path.join(directory, "model.txt"), "w") as handle:
        handle.write(model.architecture)


def write_weights(model, directory, tokenizer=None):
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    with open(os.path.join(directory, "weights.txt"), "w") as handle:
        handle.write(" ".join(map(repr, values.tolist())))


class ToyExporters:
    @hookimpl
    def foundry_exporters(self):
        return [Exporter("toy", "broken", write_then_fail), Exporter("toy", "text", write_marker),
                Exporter("toy", "weights", write_weights)]


@pytest.fixture
def checkpoint(tmp_path):
    with isolated_registry(ToyPlugin(), ToyExporters()):
        model = model_foundry.create_model(load_model_config({"architecture": "toy", "preset": "tiny"}))
        yield model_foundry.save(model, tmp_path / "ckpt")


def test_export_through_the_plugin(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(checkpoint), "--to", "text", str(out)]) == 0
    assert (out / "model.txt").read_text() == "toy"
    assert "exported toy checkpoint" in capsys.readouterr().out
    assert main(["export", str(checkpoint), "--to", "text", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--to", "text", str(out), "--overwrite"]) == 0


def test_export_writes_the_ema_weights_the_checkpoint_samples_with(tmp_path):
    with isolated_registry(ToyPlugin(), ToyExporters()):
        model = model_foundry.create_model(load_model_config({"architecture": "toy", "preset": "tiny"}))
        path = model_foundry.save(model, tmp_path / "ckpt")
        with open(os.path.join(path, "config.yaml"), "a") as handle:
            handle.write("extensions:\n  ema: {decay: 0.5}\n")
        averaged = ExponentialMovingAverage(model, EMAConfig())
        for tensor in averaged.shadow.values():
            tensor.fill_(0.25)
        save_extension_states({"ema": averaged}, path)
        assert main(["export", str(path), "--to", "weights", str(tmp_path / "out")]) == 0
        assert any(bool((p != 0.25).any()) for p in model_foundry.load(path).parameters())  # live weights differ
    written = [float(v) for v in (tmp_path / "out" / "weights.txt").read_text().split()]
    assert written and set(written) == {0.25}


def test_failed_export_leaves_nothing_behind(checkpoint, tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        main(["export", str(checkpoint), "--to", "broken", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".out")] == []


def test_unknown_format(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "--to", "txt", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no installed plugin exports toy checkpoints to 'txt'" in err and "formats for toy: broken, text" in err


def test_architecture_without_exporter(tmp_path, capsys):
    with isolated_registry(ToyPlugin()):
        model = model_foundry.create_model(load_model_config({"architecture": "toy", "preset": "tiny"}))
        model_foundry.save(model, tmp_path / "ckpt")
        assert main(["export", str(tmp_path / "ckpt"), "--to", "hf", str(tmp_path / "out")]) == 2
    assert "toy checkpoints cannot be exported" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--to", "hf", str(tmp_path / "out")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
