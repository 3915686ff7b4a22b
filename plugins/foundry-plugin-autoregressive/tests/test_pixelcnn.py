"""PixelCNN: causality in raster order, no blind spot in the gated variant, a normalised likelihood, sampling."""

from __future__ import annotations

import math

import pytest
import torch

from model_foundry.datasets.arrays import ArrayDataset
from model_foundry.errors import FoundryError
from model_foundry.evaluation import MetricContext
from model_foundry.metrics import bits_per_dim
from model_foundry.registry import find_architecture, get_registry


def dependencies(model, height: int, width: int) -> dict[tuple[int, int], set[tuple[int, int]]]:
    """For each pixel, the input pixels with a non-zero gradient of its hidden features (float64, random input)."""
    model = model.double()
    x = torch.randn(1, 1, height, width, dtype=torch.float64, requires_grad=True)
    hidden = model.stack(x, None)
    found = {}
    for i in range(height):
        for j in range(width):
            (grad,) = torch.autograd.grad(hidden[0, :, i, j].sum(), x, retain_graph=True)
            found[i, j] = {(int(a), int(b)) for a, b in grad[0, 0].nonzero().tolist()}
    return found


def before(i: int, j: int, width: int) -> set[tuple[int, int]]:
    return {(a, b) for a in range(i + 1) for b in range(width) if a * width + b < i * width + j}


def test_gated_pixelcnn_sees_every_earlier_pixel_and_nothing_else(build):
    # kernel 5 reaches 2 rows and columns per layer: four layers cover a 6x6 image, so the
    # receptive field of each pixel is every pixel before it in raster order, with no blind spot.
    model = build("pixelcnn", data_shape=[1, 6, 6], kernel_size=5, first_kernel_size=5, num_layers=3)
    for (i, j), seen in dependencies(model, 6, 6).items():
        assert seen == before(i, j, 6), f"pixel {(i, j)}: sees {sorted(seen)}"


def test_masked_pixelcnn_is_causal_but_has_the_blind_spot(build):
    model = build("pixelcnn", gated=False, data_shape=[1, 6, 6], kernel_size=3, first_kernel_size=3, num_layers=6)
    found = dependencies(model, 6, 6)
    for (i, j), seen in found.items():
        assert seen <= before(i, j, 6), f"pixel {(i, j)} sees later pixels {sorted(seen - before(i, j, 6))}"
    # Up and right of the wedge that stacked masked kernels reach: (3, 4) is before (4, 2) yet never seen,
    # while its neighbours on the wedge's edge are.
    assert (3, 4) not in found[4, 2] and {(3, 3), (2, 4)} <= found[4, 2]


@pytest.mark.parametrize("fields", [{"gated": True}, {"gated": False}, {"data_shape": [2, 1, 2]},
                                    {"num_classes": 2}])
def test_the_probabilities_of_every_image_sum_to_one(fields, build, every_example):
    fields = {"data_shape": [1, 2, 2], "levels": 3, **fields}
    model = build("pixelcnn", **fields).double().eval()
    images = every_example(3, tuple(fields["data_shape"]), model.levels.values).double()
    labels = torch.ones(len(images), dtype=torch.long) if "num_classes" in fields else None
    with torch.no_grad():
        total = model.log_pmf(pixel_values=images, class_labels=labels).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=total.dtype))


def test_log_prob_follows_the_cores_bits_per_dim_convention(build):
    """On 17-level digits-like data, the core's bits_per_dim is exactly -log2 P(codes) per dimension."""
    model = build("pixelcnn", data_shape=[1, 8, 8], levels=17).eval()
    images = torch.randint(0, 17, (6, 1, 8, 8)).float() / 8 - 1
    with torch.no_grad():
        log_pmf = model.log_pmf(pixel_values=images)
        torch.testing.assert_close(model.log_prob(pixel_values=images), log_pmf + 64 * math.log(8))
    capabilities = find_architecture("pixelcnn", get_registry()).schema.capabilities
    context = MetricContext(device="cpu", capabilities=capabilities, data_info={"levels": 17}, batch_size=4)
    metric = bits_per_dim(model, ArrayDataset({"pixel_values": images.numpy()}), context)["bits_per_dim"]
    assert metric == pytest.approx(float(-log_pmf.double().mean() / 64 / math.log(2)), rel=1e-6)


def test_samples_follow_the_models_distribution(build, every_example):
    model = build("pixelcnn", data_shape=[1, 1, 2], levels=3).double().eval()
    images = every_example(3, (1, 1, 2), model.levels.values).double()
    with torch.no_grad():
        expected = model.log_pmf(pixel_values=images).exp().double()
    samples = model.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.float32 and samples.shape == (20_000, 1, 1, 2)
    codes = model.levels.codes(samples).flatten(1)
    counts = torch.bincount(codes[:, 0] * 3 + codes[:, 1], minlength=9).double() / 20_000
    torch.testing.assert_close(counts, expected, atol=0.015, rtol=0)


def test_a_conditional_pixelcnn_scores_and_samples_each_class(build):
    model = build("pixelcnn", num_classes=3).eval()
    images = torch.zeros(2, 1, 6, 6)
    with torch.no_grad():
        scores = [model.log_prob(pixel_values=images, class_labels=torch.full((2,), c)) for c in range(3)]
    assert not torch.equal(scores[0], scores[1])
    generator = torch.Generator().manual_seed(0)
    assert model.sample(2, generator=generator, conditions=torch.tensor([0, 2])).shape == (2, 1, 6, 6)
    with pytest.raises(FoundryError, match="needs class_labels"):
        model.log_prob(pixel_values=images)
    with pytest.raises(FoundryError, match=r"0\.\.2, got \[3\]"):
        model.sample(1, conditions=torch.tensor([3]))


def test_data_of_another_shape_is_a_clear_error(build):
    model = build("pixelcnn")
    with pytest.raises(FoundryError, match=r"shape \[1, 6, 6\].*shape \[1, 8, 8\].*model.data_shape"):
        model.log_prob(pixel_values=torch.zeros(2, 1, 8, 8))
