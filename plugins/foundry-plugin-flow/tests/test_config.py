"""Bad inputs: located config errors, clear runtime errors, and training stopped at a non-finite layer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_foundry import ConfigError, FoundryError, create_model, load_config

ROOT = Path(__file__).resolve().parents[3]
FOUNDRY = str(Path(sys.executable).with_name("foundry"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    return path


BAD_MODELS = {
    # a 6x6 image cannot be squeezed twice
    "odd sizes": (
        "model:\n  architecture: flow\n  data_shape: [1, 6, 6]\n  num_scales: 2\ndata:\n  kind: digits\n",
        r"flow.yaml:3:15: model.data_shape: 6x6 images cannot be squeezed 2 times \(num_scales\): height and width "
        r"must be divisible by 2\*\*2 = 4",
    ),
    # three squeezes of 8x8 leave a 1x1 map, where a checkerboard keeps the only pixel
    "empty mask": (
        "model:\n  architecture: flow\n  num_scales: 3\n  mask: checkerboard\n",
        r"flow.yaml:4:9: model.mask: mask checkerboard uses checkerboard couplings, and at scale 3 the 1x1 map has "
        r"one pixel: the mask would leave no pixel to transform",
    ),
    "dequantised vectors": (
        "model:\n  architecture: flow\n  flow_type: nsf\n  dequantization: uniform\n",
        r"flow.yaml:4:19: model.dequantization: vectors are continuous and nsf takes them as they are; "
        r"dequantization must be none, not uniform",
    ),
    "one level": (
        "model:\n  architecture: flow\n  levels: 1\n",
        r"flow.yaml:3:11: model.levels: must be between 2 and 65536, got 1",
    ),
    "image flow for vectors": (
        "model:\n  architecture: flow\n  modality: vector\n  flow_type: glow\n",
        r"flow.yaml:4:14: model.flow_type: glow models images, and the model is for vector data; use maf or nsf",
    ),
    "vector shape for images": (
        "model:\n  architecture: flow\n  data_shape: [2]\n",
        r"flow.yaml:3:15: model.data_shape: realnvp models images: must be \[channels, height, width\], not \[2\]",
    ),
}


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_bad_configs_are_located_errors(tmp_path, name):
    text, message = BAD_MODELS[name]
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_the_command_line_reports_a_bad_config_with_exit_2_and_no_traceback(tmp_path):
    text = BAD_MODELS["odd sizes"][0] + "  validation_fraction: 0.2\n"
    result = subprocess.run(
        [FOUNDRY, "validate", str(write(tmp_path, text))], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr
    assert "model.data_shape: 6x6 images cannot be squeezed 2 times" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_flow_of_one_modality_built_for_the_other_says_how_to_build_it():
    with pytest.raises(FoundryError, match=r"a maf flow models vectors, and it is being built for image data.*modality='vector'"):
        create_model("flow", flow_type="maf")
    with pytest.raises(ConfigError, match=r"model.modality: the model is set to vector data, and the data section holds image"):
        create_model(load_config(
            _config_text("model:\n  architecture: flow\n  preset: tiny_maf\ndata:\n  kind: digits\n"), sections=("model", "data")
        ))


def _config_text(text: str) -> Path:
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    handle.write(text)
    handle.close()
    return Path(handle.name)


def test_pixels_outside_the_dequantisers_range_are_a_clear_error():
    model = create_model("flow", preset="tiny", levels=17)
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 3, 3] = 255.0  # data that was never scaled to [-1, 1]
    for call in (model, model.log_prob):
        with pytest.raises(FoundryError, match=r"pixel values in \[-1, 1\].*lie in \[0, 255\].*scale the data to \[-1, 1\]"):
            call(pixel_values=images)
    with pytest.raises(FoundryError, match=r"built for examples of shape \[1, 8, 8\].*shape \[1, 4, 4\]"):
        model(pixel_values=torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize(("preset", "layer", "expected"), [
    ("tiny", "scales.0.0.1", r"layer scales\.0\.0\.1 \(AffineCoupling\) of this realnvp flow is not finite"),
    ("tiny_glow", "scales.0.1.1", r"layer scales\.0\.1\.1 \(InvertibleConv1x1\) of this glow flow is not finite"),
    ("tiny_nsf", "flow.transform.transforms.1", r"layer flow\.transform\.transforms\.1 \(MaskedAutoregressiveTransform\)"),
])
def test_a_non_finite_log_determinant_stops_training_naming_the_layer(preset, layer, expected):
    model = create_model("flow", preset=preset)
    batch = {"vectors": torch.randn(4, 2)} if "nsf" in preset else {"pixel_values": torch.rand(4, 1, 8, 8) * 2 - 1}
    model(**batch)  # finite, and actnorm initialised
    broken = model.get_submodule(layer)
    with torch.no_grad():
        next(p for name, p in broken.named_parameters() if "scale" in name or "hyper" in name).fill_(float("inf"))
    with pytest.raises(FoundryError, match=expected + r".*training diverged"):
        model(**batch)


@pytest.mark.parametrize("name", ["flow-realnvp", "flow-glow", "flow-maf", "flow-nsf"])
def test_the_example_configs_build_the_flow_they_describe(name):
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    model = create_model(config, device="meta")
    assert model.params.flow_type == name.split("-")[1]
    assert model.config.modality == ("image" if config.data.kind == "digits" else "vector")
