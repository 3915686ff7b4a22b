"""Extensions: EMA of weights, augmentation, regularization, their states in checkpoints."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F
from gaussian_toy_plugin import PLUGIN
from gaussian_toy_plugin import build as build_toy

from model_foundry.config import load_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.extensions import (
    EXTENSIONS_FILE,
    ExponentialMovingAverage,
    Extension,
    Regularization,
    build_extensions,
    load_extension_states,
    sampling_weights,
    save_extension_states,
)
from model_foundry.factory import create_model, create_model_with_extensions
from model_foundry.plugin import hookimpl
from model_foundry.records import ModelBuilder


@pytest.fixture
def registry(foundry_registry):
    return foundry_registry(PLUGIN)


def gaussian(modality="image", shape=(1, 2, 2)):
    return create_model({"architecture": "gaussian_toy", "shape": list(shape)}, modality=modality)


def set_weights(model, value):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- building ----------------------------------------------------------------------------------


def test_extensions_are_built_from_typed_blocks_mappings_or_defaults(registry):
    model = gaussian()
    built = build_extensions({"ema": {"decay": 0.5}, "regularization": {"weight_penalty": 0.1}}, model)
    assert list(built) == ["ema", "regularization"]
    assert isinstance(built["ema"], ExponentialMovingAverage) and built["ema"].config.decay == 0.5
    assert isinstance(built["regularization"], Regularization)
    assert build_extensions({"ema": None}, model)["ema"].config.decay == 0.9999
    assert build_extensions(None, model) == {}


def test_bad_extension_options_are_located_config_errors(registry):
    model = gaussian()
    with pytest.raises(ConfigError) as error:
        build_extensions({"ema": {"decay": 1.5, "update_every": 0}}, model)
    text = str(error.value)
    assert "extensions.ema.decay" in text and "extensions.ema.update_every" in text
    with pytest.raises(ConfigError, match="did you mean 'ema'"):
        build_extensions({"emma": {}}, model)
    with pytest.raises(ConfigError, match="extensions.augmentation: augmentation does nothing"):
        build_extensions({"augmentation": {}}, model)


def test_create_model_with_extensions_reads_the_config_file(registry, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "model:\n  architecture: gaussian_toy\n  shape: [1, 2, 2]\n"
        "extensions:\n  ema: {decay: 0.9}\n  augmentation: {horizontal_flip: 0.5}\n"
    )
    model, extensions = create_model_with_extensions(str(path))
    assert model.architecture == "gaussian_toy"
    assert list(extensions) == ["ema", "augmentation"] and extensions["ema"].config.decay == 0.9
    _, only = create_model_with_extensions(str(path), extensions_config={"regularization": {"gradient_penalty": 1.0}})
    assert list(only) == ["regularization"]


class AveragedToyPlugin:
    """gaussian_toy again, as an architecture that samples with averaged weights unless told otherwise."""

    @hookimpl
    def foundry_config_schemas(self):
        (schema,) = PLUGIN.foundry_config_schemas()
        return [attrs.evolve(schema, name="averaged_toy", default_extensions={"ema": {"decay": 0.99}})]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("averaged_toy", build_toy)]


def test_an_architectures_default_extensions_apply_to_configs_without_an_extensions_section(foundry_registry, tmp_path):
    foundry_registry(PLUGIN, AveragedToyPlugin())
    model_lines = "model:\n  architecture: averaged_toy\n  shape: [1, 2, 2]\n"
    configs = {}
    for name, extensions in (("none", ""), ("empty", "extensions: {}\n"), ("own", "extensions:\n  ema: {decay: 0.5}\n")):
        (tmp_path / f"{name}.yaml").write_text(model_lines + extensions)
        configs[name] = load_config(tmp_path / f"{name}.yaml")
    assert configs["none"].extensions["ema"].decay == 0.99
    assert configs["none"].to_dict()["extensions"] == {"ema": attrs.asdict(configs["none"].extensions["ema"])}
    assert configs["empty"].extensions == {}
    assert configs["own"].extensions["ema"].decay == 0.5
    _, built = create_model_with_extensions("averaged_toy")
    assert list(built) == ["ema"] and built["ema"].config.decay == 0.99
    _, built = create_model_with_extensions("averaged_toy", extensions_config={})
    assert built == {}
    (tmp_path / "plain.yaml").write_text("model:\n  architecture: gaussian_toy\n  shape: [1, 2, 2]\n")
    assert load_config(tmp_path / "plain.yaml").extensions is None  # no defaults declared: nothing added


def test_the_base_extension_does_nothing(registry):
    model, extension = gaussian(), Extension()
    batch = {"pixel_values": torch.ones(2, 1, 2, 2)}
    assert extension.transform_batch(batch, None) is batch
    assert extension.extra_loss(model, batch, model(**batch)) is None
    assert extension.state_dict() == {}
    with sampling_weights({"base": extension}, model):
        pass


# --- EMA ---------------------------------------------------------------------------------------


def test_ema_of_a_constant_model_after_k_steps_is_the_closed_form(registry):
    model = gaussian()
    set_weights(model, 0.0)
    ema = ExponentialMovingAverage(model, build_extensions({"ema": {"decay": 0.9}}, model)["ema"].config)
    set_weights(model, 2.0)
    for step in range(1, 8):
        ema.on_optimizer_step(model, step)
    # avg_k = w + decay^k (avg_0 - w) with avg_0 = 0, w = 2, k = 7
    expected = 2.0 * (1 - 0.9**7)
    for tensor in ema.shadow.values():
        torch.testing.assert_close(tensor, torch.full_like(tensor, expected))


def test_ema_copies_until_update_after_step_then_averages_every_n_steps(registry):
    model = gaussian()
    (ema,) = build_extensions({"ema": {"decay": 0.5, "update_after_step": 2, "update_every": 3}}, model).values()
    for step in range(1, 9):
        set_weights(model, float(step))
        ema.on_optimizer_step(model, step)
        if step == 2:
            assert all(torch.equal(t, torch.full_like(t, 2.0)) for t in ema.shadow.values())
    # steps 3, 4 skipped; step 5: 0.5 * 2 + 0.5 * 5 = 3.5; step 8: 0.5 * 3.5 + 0.5 * 8 = 5.75
    assert all(torch.equal(t, torch.full_like(t, 5.75)) for t in ema.shadow.values())


def test_ema_warmup_follows_the_diffusers_ramp(registry):
    model = gaussian()
    (ema,) = build_extensions({"ema": {"decay": 0.99, "warmup": True, "min_decay": 0.1}}, model).values()
    assert ema.decay_at(1) == pytest.approx(1 - 2 ** (-2 / 3))
    assert ema.decay_at(10) == pytest.approx(1 - 11 ** (-2 / 3))
    assert ema.decay_at(10**6) == 0.99
    (slow,) = build_extensions({"ema": {"decay": 0.99, "warmup": True, "min_decay": 0.5}}, model).values()
    assert slow.decay_at(1) == 0.5
    (constant,) = build_extensions({"ema": {"decay": 0.99}}, model).values()
    assert constant.decay_at(1) == 0.99


def test_ema_weights_are_swapped_in_for_sampling_and_restored_exactly(registry):
    model = gaussian()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))
    extensions = build_extensions({"ema": {"decay": 0.5}}, model)
    before = weights(model)
    set_weights(model, 3.0)
    extensions["ema"].on_optimizer_step(model, 1)
    trained = weights(model)
    with sampling_weights(extensions, model):
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(parameter, 0.5 * before[name] + 0.5 * trained[name])
        samples = model.sample(4, generator=torch.Generator().manual_seed(1))
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, trained[name])
    reference = gaussian()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.copy_(extensions["ema"].shadow[name])
    assert torch.equal(samples, reference.sample(4, generator=torch.Generator().manual_seed(1)))


def test_ema_weights_are_restored_when_sampling_raises(registry):
    model = gaussian()
    extensions = build_extensions({"ema": {"decay": 0.5}}, model)
    set_weights(model, 1.0)
    with pytest.raises(RuntimeError), sampling_weights(extensions, model):
        raise RuntimeError("boom")
    assert all(torch.equal(p, torch.ones_like(p)) for p in model.parameters())


def test_extension_states_round_trip_bit_exactly_and_resume_identically(registry, tmp_path):
    def run(model, ema, steps):
        for step in steps:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.1 * step)
            ema.on_optimizer_step(model, step)

    model = gaussian()
    extensions = build_extensions({"ema": {"decay": 0.7, "warmup": True}}, model)
    run(model, extensions["ema"], range(1, 4))
    path = save_extension_states(extensions, tmp_path)
    assert path == str(tmp_path / EXTENSIONS_FILE)
    assert not list(tmp_path.glob("*.partial"))

    resumed = gaussian()
    with torch.no_grad():
        for mine, theirs in zip(resumed.parameters(), model.parameters(), strict=True):
            mine.copy_(theirs)
    restored = build_extensions({"ema": {"decay": 0.7, "warmup": True}}, resumed)
    load_extension_states(restored, tmp_path)
    for name, tensor in extensions["ema"].shadow.items():
        assert torch.equal(restored["ema"].shadow[name], tensor)
    run(model, extensions["ema"], range(4, 7))
    run(resumed, restored["ema"], range(4, 7))
    for name, tensor in extensions["ema"].shadow.items():
        assert torch.equal(restored["ema"].shadow[name], tensor)


def test_missing_or_mismatched_extension_state_is_a_clear_error(registry, tmp_path):
    extensions = build_extensions({"ema": {}}, gaussian())
    with pytest.raises(FoundryError, match=f"has no {EXTENSIONS_FILE}.*ema"):
        load_extension_states(extensions, tmp_path)
    save_extension_states(build_extensions({"ema": {}}, gaussian(shape=(1, 3, 3))), tmp_path)
    with pytest.raises(FoundryError, match="do not match this model.*other shape"):
        load_extension_states(extensions, tmp_path)
    assert save_extension_states({"base": Extension()}, tmp_path / "none") is None


# --- augmentation ------------------------------------------------------------------------------


def augment(model, generator_seed, **options):
    (augmentation,) = build_extensions({"augmentation": options}, model).values()
    images = torch.arange(2 * 16 * 4 * 5, dtype=torch.float32).view(16, 2, 4, 5)
    labels = torch.arange(16)
    batch = {"pixel_values": images, "class_labels": labels}
    out = augmentation.transform_batch(batch, torch.Generator().manual_seed(generator_seed))
    assert batch["pixel_values"] is images, "the given batch is left unchanged"
    assert out["class_labels"] is labels, "only the modality's input key changes"
    return images, out["pixel_values"]


def test_augmentation_is_reproducible_under_a_seed(registry):
    model = gaussian(shape=(2, 4, 5))
    options = {"horizontal_flip": 0.5, "max_shift": 1}
    _, first = augment(model, 7, **options)
    _, again = augment(model, 7, **options)
    _, other = augment(model, 8, **options)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_horizontal_flips_mirror_some_images_and_keep_the_others(registry):
    model = gaussian(shape=(2, 4, 5))
    images, out = augment(model, 0, horizontal_flip=1.0)
    assert torch.equal(out, images.flip(-1))
    images, out = augment(model, 0, horizontal_flip=0.5)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


@pytest.mark.parametrize("padding, mode", [("edge", "replicate"), ("reflect", "reflect"), ("constant", "constant")])
def test_shifts_move_each_image_by_whole_pixels_with_padding(registry, padding, mode):
    model = gaussian(shape=(2, 4, 5))
    images, out = augment(model, 3, max_shift=2, shift_padding=padding)
    padded = F.pad(images, (2,) * 4, mode=mode, **({"value": -1.0} if mode == "constant" else {}))
    seen = set()
    for index, image in enumerate(out):
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
            if torch.equal(image, padded[index, :, 2 - dy:2 - dy + 4, 2 - dx:2 - dx + 5])
        ]
        assert matches, f"image {index} is not a shift of its input"
        seen.add(matches[0])
    assert len(seen) > 3


def test_vector_noise_has_the_configured_spread_and_needs_a_vector_model(registry):
    model = gaussian(modality="vector", shape=(3,))
    (augmentation,) = build_extensions({"augmentation": {"noise_std": 0.5}}, model).values()
    vectors = torch.zeros(4000, 3)
    out = augmentation.transform_batch({"vectors": vectors}, torch.Generator().manual_seed(0))["vectors"]
    assert out.std().item() == pytest.approx(0.5, rel=0.05)
    assert out.mean().abs().item() < 0.03
    assert torch.equal(vectors, torch.zeros(4000, 3))
    with pytest.raises(ConfigError, match="extensions.augmentation.horizontal_flip: .*image data.*built for vector"):
        build_extensions({"augmentation": {"horizontal_flip": 0.5}}, model)
    with pytest.raises(ConfigError, match="extensions.augmentation.noise_std: .*vector data.*built for image"):
        build_extensions({"augmentation": {"noise_std": 0.5}}, gaussian())


# --- regularization ----------------------------------------------------------------------------


def test_weight_penalty_is_the_scaled_sum_of_squares(registry):
    model = gaussian()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))
    (regularization,) = build_extensions({"regularization": {"weight_penalty": 0.25}}, model).values()
    batch = {"pixel_values": torch.randn(3, 1, 2, 2)}
    penalty = regularization.extra_loss(model, batch, model(**batch))
    expected = 0.25 * (model.loc.detach().pow(2).sum() + model.scale_tril.detach().pow(2).sum())
    torch.testing.assert_close(penalty, expected)


def test_gradient_penalty_is_n_times_the_squared_input_gradient_of_the_loss(registry):
    model = gaussian(modality="vector", shape=(3,))
    sigma, mu = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.1, -0.2, 0.3])
    with torch.no_grad():
        model.loc.copy_(mu)
        model.scale_tril.copy_(torch.diag(sigma))
    (regularization,) = build_extensions({"regularization": {"gradient_penalty": 2.0}}, model).values()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    batch = regularization.transform_batch({"vectors": x}, None)
    assert batch["vectors"].requires_grad and not x.requires_grad
    penalty = regularization.extra_loss(model, batch, model(**batch))
    # loss = mean_n NLL(x_n): d loss / d x_n = (x_n - mu) / sigma^2 / N
    gradient = (x - mu) / sigma**2 / 5
    torch.testing.assert_close(penalty, 2.0 * 5 * gradient.pow(2).sum())
    penalty.backward()
    assert model.loc.grad is not None and model.loc.grad.abs().sum() > 0, "the penalty trains the model"


def test_gradient_penalty_needs_continuous_inputs(registry):
    model = gaussian()
    (regularization,) = build_extensions({"regularization": {"gradient_penalty": 1.0}}, model).values()
    with pytest.raises(FoundryError, match="needs continuous inputs"):
        regularization.transform_batch({"pixel_values": torch.zeros(2, 1, 2, 2, dtype=torch.long)}, None)


# --- EMA of normalization statistics -------------------------------------------------------------


def test_ema_averages_batch_norm_running_statistics_and_swaps_them_in_for_sampling(registry):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2, bias=False))
    (ema,) = build_extensions({"ema": {"decay": 0.5}}, model).values()
    assert set(ema.statistics) == {"1.running_mean", "1.running_var"}
    initial = {name: tensor.clone() for name, tensor in ema.statistics.items()}
    model.train()
    model(torch.randn(16, 3) + 2.0)  # batch norm moves its running statistics
    live = {name: tensor.clone() for name, tensor in ema.statistics.items()}
    assert not torch.equal(live["1.running_mean"], initial["1.running_mean"])
    ema.on_optimizer_step(model, 1)
    with sampling_weights({"ema": ema}, model):
        for name, tensor in model.state_dict().items():
            if name in live:
                torch.testing.assert_close(tensor, 0.5 * initial[name] + 0.5 * live[name])
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in live.items())
    assert "shadow.1.running_var" in ema.state_dict() and "shadow.1.num_batches_tracked" not in ema.state_dict()


def test_an_ema_state_without_running_statistics_loads_with_the_models_own(registry):
    """Checkpoints from before the statistics were averaged: their running statistics stand in."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    (ema,) = build_extensions({"ema": {"decay": 0.5}}, model).values()
    with torch.no_grad():
        model[1].running_mean.fill_(7.0)
    old = {key: value.clone() + 1 for key, value in ema.state_dict().items() if "running" not in key}
    ema.load_state_dict(old)
    assert torch.equal(ema.shadow["1.running_mean"], torch.full((4,), 7.0))
    assert torch.equal(ema.shadow["0.weight"], old["shadow.0.weight"])
    with pytest.raises(FoundryError, match="missing: shadow.0.bias"):
        ema.load_state_dict({key: value for key, value in old.items() if key != "shadow.0.bias"})
