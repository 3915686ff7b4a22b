"""The VQ-VAE: nearest-entry codes, the straight-through gradient, the stop-gradients of the
codebook and commitment losses, moving-average codebook updates, code perplexity, the bound."""

from __future__ import annotations

import math

import pytest
import torch
from foundry_plugin_vae.vq_vae import VectorQuantizer

from model_foundry import create_model

CODEBOOK = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])


def quantizer(ema_updates=False, decay=0.9):
    vq = VectorQuantizer(4, 2, ema_updates, decay)
    with torch.no_grad():
        vq.codebook.copy_(CODEBOOK)
        vq.initialized.fill_(True)
        if ema_updates:
            vq.embedding_sum.copy_(CODEBOOK)
            vq.cluster_size.fill_(1.0)
    return vq


ENCODINGS = torch.tensor([[[0.1, -0.1], [0.9, 0.2]], [[0.2, 0.7], [-0.6, -0.9]], [[0.8, -0.1], [0.05, 0.1]]])


def test_each_vector_takes_its_nearest_entry_and_the_decoders_gradient_passes_straight_through():
    vq = quantizer()
    encodings = ENCODINGS.clone().requires_grad_()
    quantized, codes, _ = vq(encodings)
    assert codes.tolist() == [[0, 1], [2, 3], [1, 0]]
    torch.testing.assert_close(quantized, CODEBOOK[codes])  # the decoder reads the codebook entries
    upstream = torch.randn(quantized.shape, generator=torch.Generator().manual_seed(0))
    (quantized * upstream).sum().backward()
    assert torch.equal(encodings.grad, upstream)  # unchanged: the identity Jacobian of straight-through
    assert vq.codebook.grad is None  # the decoder's loss never moves the codebook


def test_the_codebook_and_commitment_losses_have_their_stop_gradients():
    vq = quantizer()
    encodings = ENCODINGS.clone().requires_grad_()
    _, codes, terms = vq(encodings)
    entries = CODEBOOK[codes]
    squared = (ENCODINGS - entries).square().sum((-1, -2)).mean()
    torch.testing.assert_close(terms["codebook_loss"], squared)
    torch.testing.assert_close(terms["commitment_loss"], squared)
    terms["codebook_loss"].backward(retain_graph=True)
    assert encodings.grad is None  # ||sg(z_e) - e||^2 moves the codebook only
    expected = torch.zeros_like(CODEBOOK).index_add_(0, codes.flatten(), (2 * (entries - ENCODINGS) / 3).flatten(0, 1))
    torch.testing.assert_close(vq.codebook.grad, expected)
    vq.codebook.grad = None
    terms["commitment_loss"].backward()
    assert vq.codebook.grad is None  # ||z_e - sg(e)||^2 moves the encoder only
    torch.testing.assert_close(encodings.grad, 2 * (ENCODINGS - entries) / 3)


def test_which_parameters_each_loss_of_the_model_reaches():
    torch.manual_seed(0)
    model = create_model({"architecture": "vq_vae", "preset": "tiny"})
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    out = model(pixel_values=images)
    groups = {
        "encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters()),
        "codebook": [model.quantizer.codebook], "prior": list(model.prior.parameters()),
        "likelihood": [model.likelihood.log_scale],
    }
    expected = {
        "reconstruction_loss": {"encoder", "decoder", "likelihood"},  # the encoder through straight-through
        "codebook_loss": {"codebook"},
        "commitment_loss": {"encoder"},
        "prior_loss": {"prior"},  # fitted to the detached codes
    }
    for term, reached in expected.items():
        gradients = torch.autograd.grad(out[term], [p for ps in groups.values() for p in ps], allow_unused=True, retain_graph=True)
        found, position = set(), 0
        for name, parameters in groups.items():
            if any(g is not None and bool(g.abs().sum() > 0) for g in gradients[position:position + len(parameters)]):
                found.add(name)
            position += len(parameters)
        assert found == reached, term
    total = out.reconstruction_loss + out.codebook_loss + model.commitment_weight * out.commitment_loss + out.prior_loss
    assert torch.equal(out.loss, total)


def test_moving_average_updates_follow_the_assigned_encodings():
    vq = quantizer(ema_updates=True, decay=0.9)
    assert "codebook" in dict(vq.named_buffers()) and not list(vq.parameters())
    _, codes, terms = vq(ENCODINGS)
    assert "codebook_loss" not in terms
    counts = torch.bincount(codes.flatten(), minlength=4).float()
    sums = torch.zeros(4, 2).index_add_(0, codes.flatten(), ENCODINGS.flatten(0, 1))
    cluster_size = 0.9 * torch.ones(4) + 0.1 * counts
    embedding_sum = 0.9 * CODEBOOK + 0.1 * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + 1e-5) / (total + 4e-5) * total
    torch.testing.assert_close(vq.codebook, embedding_sum / smoothed[:, None])
    before = vq.codebook.clone()
    vq.eval()
    vq(ENCODINGS)
    assert torch.equal(vq.codebook, before)  # evaluation never moves the codebook


def test_code_perplexity_counts_the_entries_in_use():
    vq = quantizer()
    _, _, all_used = vq(CODEBOOK[None].repeat(2, 1, 1))
    _, _, one_used = vq(CODEBOOK[:1, None].repeat(3, 2, 1))
    assert all_used["codebook_perplexity"].item() == pytest.approx(4.0)
    assert one_used["codebook_perplexity"].item() == pytest.approx(1.0)


def test_the_bound_is_the_decoders_likelihood_plus_the_priors_and_samples_come_from_the_prior():
    torch.manual_seed(0)
    model = create_model({"architecture": "vq_vae", "preset": "tiny"}).eval()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    codes = model.encode(pixel_values=images)
    assert codes.shape == (4, 4) and codes.dtype == torch.long  # latent_dim 8 / code_dim 2
    expected = model.likelihood.log_prob(images, model.decode(codes)) + model.prior.log_prob(codes)
    torch.testing.assert_close(model.log_prob(pixel_values=images), expected)
    # the prior is a distribution over the codebook_size ** num_codes code sequences
    every = torch.cartesian_prod(*[torch.arange(8)] * 4)
    assert model.prior.log_prob(every).exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    # its samples follow it: the first code's frequencies match p(c_1)
    drawn = model.prior.sample(20_000, 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    first = torch.bincount(drawn[:, 0], minlength=8).float() / 20_000
    start = model.prior.logits(model.prior.gru(model.prior.embed(torch.tensor([[8]])))[0][0, 0]).softmax(-1)
    torch.testing.assert_close(first, start, atol=0.015, rtol=0)
    assert math.isfinite(model.sample(3, generator=torch.Generator().manual_seed(0)).sum().item())
