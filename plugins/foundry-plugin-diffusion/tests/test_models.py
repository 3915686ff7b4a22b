"""The models: conformance, guidance, score matching on Gaussian data, the diffusers export, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from foundry_plugin_diffusion.model import DiffusionModel

import model_foundry
from model_foundry.cli import main
from model_foundry.errors import FoundryError
from model_foundry.testing import check_architecture


@pytest.mark.parametrize("architecture", ["ddpm", "diffusion", "score_diffusion"])
def test_conformance(architecture):
    check_architecture(architecture)


def tiny(architecture: str = "ddpm", **fields):
    torch.manual_seed(0)
    return model_foundry.create_model(architecture, preset="tiny", **fields)


def test_vectors_get_an_mlp_that_trains_and_samples_points():
    model = tiny(modality="vector", input_shape=[2], clip_sample=None)
    assert type(model.network).__name__ == "MLPBackbone" and not model.clip_sample
    assert torch.isfinite(model(vectors=torch.randn(8, 2)).loss)
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)


# --- classifier-free guidance -------------------------------------------------------------------


def test_guidance_mixes_the_conditional_and_unconditional_predictions():
    model = tiny("diffusion").eval()  # num_classes 2, guidance 2
    x, labels, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 1]), 17
    steps = torch.full((3,), t)
    with torch.no_grad():
        conditional = model.network(x, steps, labels)
        unconditional = model.network(x, steps, torch.full((3,), model.num_classes))
        x0, eps = model._denoiser(labels, 2.0)(x, t)
    torch.testing.assert_close(eps, unconditional + 2.0 * (conditional - unconditional), rtol=1e-5, atol=1e-5)
    _, plain = model._denoiser(labels, 1.0)(x, t)
    torch.testing.assert_close(plain, conditional)


def test_label_dropout_replaces_training_labels_by_the_no_class_label_only_in_training():
    model = tiny("diffusion", label_dropout=0.5)
    seen = []
    model.network.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    images, labels = torch.rand(400, 1, 8, 8) * 2 - 1, torch.arange(400) % 2
    model.train()(pixel_values=images, class_labels=labels)
    dropped = seen[-1] == model.num_classes
    assert 0.4 < float(dropped.float().mean()) < 0.6
    assert torch.equal(seen[-1][~dropped], labels[~dropped])
    model.eval()(pixel_values=images, class_labels=labels)
    assert torch.equal(seen[-1], labels)


def test_guidance_on_an_unconditional_model_is_refused():
    with pytest.raises(FoundryError, match="unconditional"):
        tiny().sample(2, guidance_scale=3.0)
    with pytest.raises(FoundryError, match="unconditional"):
        tiny().sample(2, conditions=torch.tensor([0, 1]))


# --- DDIM on the model ----------------------------------------------------------------------------


def test_ddim_with_eta_0_draws_nothing_after_the_starting_noise_and_inverts():
    model = tiny(clip_sample=False).eval()
    generator = torch.Generator().manual_seed(3)
    samples = model.sample(4, generator=generator, sampler="ddim", steps=50)
    after_noise = torch.Generator().manual_seed(3)
    latent = torch.randn(4, 1, 8, 8, generator=after_noise)
    assert torch.equal(generator.get_state(), after_noise.get_state())
    recovered = model.invert(samples, steps=50)
    # an untrained network's ODE is rough; the inversion still lands near the latent it came from
    assert float((recovered - latent).abs().mean()) < 0.1 * float(latent.abs().mean())


# --- score matching -------------------------------------------------------------------------------


def test_denoising_score_matching_on_gaussian_data_learns_the_analytic_score():
    torch.manual_seed(0)
    mean, scale = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 0.8])
    model = model_foundry.create_model(
        "score_diffusion", preset="tiny", modality="vector", input_shape=[2], sigma_min=0.05, sigma_max=3.0,
        backbone={"hidden_dim": 64, "num_layers": 2},
    )
    points = mean + scale * torch.randn(2000, 2)

    def relative_errors() -> dict[float, float]:
        errors = {}
        for sigma in (0.1, 0.5, 2.0):
            analytic = -(points - mean) / (scale**2 + sigma**2)  # the score of N(mean, scale^2 + sigma^2)
            with torch.no_grad():
                learned = model.score(points, sigma)
            errors[sigma] = float((learned - analytic).norm(dim=1).mean() / analytic.norm(dim=1).mean())
        return errors

    untrained = relative_errors()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(600):
        if step == 400:
            optimizer.param_groups[0]["lr"] = 6e-4
        optimizer.zero_grad()
        model(vectors=mean + scale * torch.randn(256, 2)).loss.backward()
        optimizer.step()
    trained = relative_errors()
    # 600 steps of a small MLP: within 12-15 % of the analytic score where the noise is not tiny, and
    # within 30 % at sigma 0.1 (the smallest levels weigh least in the sigma^2-weighted loss); 4x closer than untrained.
    for sigma, bound in ((0.1, 0.3), (0.5, 0.12), (2.0, 0.15)):
        assert trained[sigma] < bound and trained[sigma] < untrained[sigma] / 4, (sigma, trained, untrained)


# --- export to diffusers --------------------------------------------------------------------------


def test_diffusers_pipelines_load_the_export_and_sample_what_the_model_samples(tmp_path):
    from diffusers import DDIMPipeline, DDPMPipeline

    model = tiny()
    model_foundry.save(model, tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--to", "diffusers", str(tmp_path / "out")]) == 0
    steps = model.schedule.num_timesteps
    ours = model.eval().sample(3, generator=torch.Generator().manual_seed(5), sampler="ddpm", steps=steps)
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "out")
    pipeline.set_progress_bar_config(disable=True)
    theirs = pipeline(batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=steps,
                      output_type="np").images
    np.testing.assert_allclose((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), theirs, atol=1e-4)
    ddim = DDIMPipeline.from_pretrained(tmp_path / "out")
    ddim.set_progress_bar_config(disable=True)
    theirs = ddim(batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=10, eta=0.0,
                  output_type="np").images
    ours = model.sample(3, generator=torch.Generator().manual_seed(5), sampler="ddim", steps=10)
    np.testing.assert_allclose((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), theirs, atol=1e-4)


def test_only_unconditional_unet_models_export(tmp_path, capsys):
    for name, fields in (("conditional", {"architecture": "diffusion"}),
                         ("mlp", {"backbone": {"type": "mlp"}})):
        architecture = fields.pop("architecture", "ddpm")
        model_foundry.save(tiny(architecture, **fields), tmp_path / name)
        assert main(["export", str(tmp_path / name), "--to", "diffusers", str(tmp_path / f"{name}-out")]) == 2
        assert ("class-conditional" if name == "conditional" else "mlp backbone") in capsys.readouterr().err
        assert not (tmp_path / f"{name}-out").exists()


# --- bad input ------------------------------------------------------------------------------------

BAD_MODELS = [
    ("noise_schedule: {num_timesteps: 0}", "model.noise_schedule.num_timesteps: must be > 0"),
    ("noise_schedule: {beta_start: 0.02, beta_end: 0.01}", "model.noise_schedule.beta_end: must be > beta_start"),
    ("noise_schedule: {beta_start: 0.0}", "model.noise_schedule.beta_start: must be in (0, 1)"),
    ("noise_schedule: {beta_end: 1.5}", "model.noise_schedule.beta_end: must be in (0, 1)"),
    ("backbone: {channel_mults: [1, 1, 1, 1, 1]}", "model.backbone.channel_mults: 5 levels halve a 8x8 image 4 times"),
    ("input_shape: [1, 6, 6]\n  backbone: {channel_mults: [1, 2, 2]}", "model.input_shape: the UNet halves the image 2 times"),
    ("backbone: {in_channels: 3}", "model.backbone.in_channels: must be input_shape[0] = 1"),
]


def write_config(tmp_path, model_lines: str, architecture: str = "ddpm", training: str = "") -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n  architecture: {architecture}\n  preset: tiny\n  {model_lines}\ndata:\n  kind: digits\n{training}")
    return str(path)


@pytest.mark.parametrize(("model_lines", "message"), BAD_MODELS)
def test_bad_model_configs_are_located_errors_with_exit_2(tmp_path, capsys, model_lines, message):
    assert main(["validate", write_config(tmp_path, model_lines)]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.yaml:" in err and "Traceback" not in err


def test_guidance_on_an_unconditional_config_is_a_located_error(tmp_path, capsys):
    assert main(["validate", write_config(tmp_path, "guidance_scale: 3.0\n  num_classes: null", "diffusion")]) == 2
    assert "model.guidance_scale: guidance needs a conditional model" in capsys.readouterr().err


def test_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_forward, calls = DiffusionModel.forward, []

    def forward(self, *args, **kwargs):
        calls.append(1)
        output = real_forward(self, *args, **kwargs)
        if len(calls) >= 5:
            output["loss"] = output.loss * math.nan
        return output

    monkeypatch.setattr(DiffusionModel, "forward", forward)
    training = (f"training:\n  max_steps: 8\n  batch_size: 8\n  save_every: 2\n  eval_every: 0\n  log_every: 1\n"
                f"  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", write_config(tmp_path, "sampling_steps: 2", training=training)]) == 2
    err = capsys.readouterr().err
    assert "not a finite number since step 5" in err and "Traceback" not in err
    assert f"the last good checkpoint is {tmp_path / 'run' / 'checkpoint-4'}" in err
    assert (tmp_path / "run" / "checkpoint-4" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "final").exists()
