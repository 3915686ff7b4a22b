"""Performer models: conformance, causality, padding, generation, feature redraws, norms, save/load."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from foundry_plugin_performer.attention import FavorAttention
from foundry_plugin_performer.model import (
    FeedForward,
    PerformerDecoder,
    PerformerForCausalLM,
    PerformerForMaskedLM,
    ScaleNorm,
)

from model_foundry import FoundryError, create_model, load, save
from model_foundry.config import ModelConfig, load_model_config
from model_foundry.testing import check_architecture
from model_foundry.testing.conformance import check_save_load, check_training_step

VOCAB = 50


def config(preset: str = "tiny", **fields: Any) -> ModelConfig:
    """A preset with some fields changed; ``decoder={...}`` merges into the preset's block."""
    return load_model_config({"architecture": "performer", "preset": preset, **fields})


def build(preset: str = "tiny", seed: int = 0, **fields: Any) -> Any:
    torch.manual_seed(seed)
    return create_model(config(preset, **fields)).eval()


def projections(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.projection.clone() for m in model.modules() if isinstance(m, FavorAttention)]


def test_conformance():
    check_architecture("performer")


def test_conformance_masked_lm_encoder():
    check_training_step("performer", preset="tiny-encoder")
    check_save_load("performer", preset="tiny-encoder")


def test_token_level_classes_follow_model_type():
    assert type(build(vocab_size=VOCAB)) is PerformerForCausalLM
    encoder = build("tiny-encoder", vocab_size=VOCAB)
    assert type(encoder) is PerformerForMaskedLM and not encoder.supports_generation
    assert type(build()) is PerformerDecoder and not build().supports_generation


# --- causality ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention_type, use_rezero", [("causal_linear", False), ("causal_linear", True), ("softmax", False)])
def test_decoder_is_strictly_causal_with_large_norm_future(attention_type, use_rezero):
    lm = build(decoder={"attention_type": attention_type, "use_rezero": use_rezero})
    if use_rezero:  # no norm before attention: the future's large norms reach the FAVOR+ features as they are
        for name, parameter in lm.named_parameters():
            if name.endswith("gain"):
                parameter.data.fill_(1.0)
    x = torch.randn(2, 40, 32)
    future = x.clone()
    future[:, 25:] = torch.randn(2, 15, 32) * (1e3 if use_rezero else 1e4)
    with torch.no_grad():
        past, changed = lm(x)[:, :25], lm(future)[:, :25]
    assert torch.isfinite(changed).all()
    torch.testing.assert_close(changed, past, rtol=1e-5, atol=1e-6)


def test_token_decoder_is_strictly_causal_with_large_norm_future_tokens():
    model = build(vocab_size=VOCAB)
    with torch.no_grad():
        model.embeddings.weight[7] *= 1e4  # a token whose embedding has a huge norm
    ids = torch.randint(8, VOCAB, (2, 30))
    future = ids.clone()
    future[:, 20:] = 7
    with torch.no_grad():
        past, changed = model(ids).logits[:, :20], model(future).logits[:, :20]
    torch.testing.assert_close(changed, past, rtol=1e-5, atol=1e-5)


def test_use_causal_mask():
    softmax = build(decoder={"attention_type": "softmax"})
    x = torch.randn(1, 12, 32)
    with torch.no_grad():
        causal = softmax(x, use_causal_mask=True)
        bidirectional = softmax(x, use_causal_mask=False)
        torch.testing.assert_close(causal[:, :5], softmax(x[:, :5]), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(causal[:, :5], bidirectional[:, :5], atol=1e-3)
    with pytest.raises(FoundryError, match="causal_linear attention is causal by construction"):
        build()(x, use_causal_mask=False)
    with pytest.raises(FoundryError, match="linear attention is bidirectional"):
        build("tiny-encoder", vocab_size=VOCAB)(torch.tensor([[1, 2]]), use_causal_mask=True)
    lm = build(vocab_size=VOCAB)
    ids = torch.randint(0, VOCAB, (1, 6))
    assert torch.equal(lm(ids, use_causal_mask=True).logits, lm(ids).logits)


def test_bf16_autocast_stays_finite():
    model = build(vocab_size=VOCAB).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(torch.randint(0, VOCAB, (2, 33)), labels=torch.randint(0, VOCAB, (2, 33)))
    assert torch.isfinite(output.logits.float()).all() and torch.isfinite(output.loss)
    output.loss.backward()


# --- padding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention_type", ["linear", "softmax"])
def test_encoder_padding_equals_truncation(attention_type):
    encoder = build("tiny-encoder", encoder={"attention_type": attention_type})
    x = torch.randn(2, 10, 32)
    padded = torch.cat([x, torch.randn(2, 5, 32) * 1e3], dim=1)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[:, 10:] = False
    with torch.no_grad():
        torch.testing.assert_close(encoder(padded, mask=mask)[:, :10], encoder(x), rtol=1e-5, atol=1e-5)


def test_masked_lm_attention_mask_equals_truncation():
    model = build("tiny-encoder", vocab_size=VOCAB)
    ids = torch.randint(0, VOCAB, (2, 9))
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    mask = (torch.arange(13) < 9).long().expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(
            model(padded, attention_mask=mask).logits[:, :9], model(ids).logits, rtol=1e-5, atol=1e-5
        )


# --- generation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention_type", ["causal_linear", "softmax"])
def test_generation_equals_full_forward(attention_type):
    model = build(vocab_size=VOCAB, decoder={"attention_type": attention_type})
    prompt = torch.randint(0, VOCAB, (2, 7))
    generated = model.generate(prompt, max_new_tokens=20)
    with torch.no_grad():
        logits = model(generated).logits
    assert torch.equal(logits[:, 6:-1].argmax(-1), generated[:, 7:])
    # Step by step, the recurrent state gives the full pass's logits at every position.
    with torch.no_grad():
        step_logits, state = model.next_token_logits(generated[:, :7])
        stepped = [step_logits]
        for position in range(7, generated.size(1) - 1):
            step_logits, state = model.next_token_logits(generated[:, position : position + 1], state)
            stepped.append(step_logits)
    torch.testing.assert_close(torch.stack(stepped, dim=1), logits[:, 6:-1], rtol=1e-4, atol=1e-5)


def test_recurrent_state_does_not_grow():
    model = build(vocab_size=VOCAB)

    def size(state: Any) -> int:
        return sum(cache.summary.numel() + cache.max_log_scale.numel() for cache in state[1])

    with torch.no_grad():
        _, state = model.next_token_logits(torch.randint(0, VOCAB, (1, 5)))
        first = size(state)
        for _ in range(50):
            _, state = model.next_token_logits(torch.randint(0, VOCAB, (1, 1)), state)
    assert state[0] == 55 and size(state) == first


# --- feature redraws ------------------------------------------------------------------------------


def test_redraw_exactly_every_interval_training_steps_never_in_eval():
    model = build(vocab_size=VOCAB, decoder={"feature_redraw_interval": 3, "auto_check_redraw": False}).train()
    history = [projections(model)]
    for step in range(1, 10):
        model.on_optimizer_step(step)
        history.append(projections(model))
    changed = [
        step for step in range(1, 10) if not all(torch.equal(a, b) for a, b in zip(history[step - 1], history[step], strict=True))
    ]
    assert changed == [3, 6, 9]
    # Every layer got new features, each its own.
    assert all(not torch.equal(a, b) for a, b in zip(history[2], history[3], strict=True))
    model.eval()
    before = projections(model)
    model.on_optimizer_step(12)
    model(torch.randint(0, VOCAB, (1, 5)))
    assert all(torch.equal(a, b) for a, b in zip(before, projections(model), strict=True))


def test_auto_check_redraw_counts_training_forward_passes():
    model = build(vocab_size=VOCAB, decoder={"feature_redraw_interval": 2}).train()
    ids = torch.randint(0, VOCAB, (1, 6))
    seen = []
    for _ in range(5):
        model(ids)
        seen.append(projections(model)[0])
    # Passes 1-2 use the first draw, 3-4 the second, 5 the third.
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(seen[2], seen[3]) and not torch.equal(seen[3], seen[4])
    model.eval()
    model(ids)
    assert torch.equal(projections(model)[0], seen[4])
    # Once a training loop calls on_optimizer_step, it alone decides.
    model.train()
    model.on_optimizer_step(1)
    for _ in range(4):
        model(ids)
    assert torch.equal(projections(model)[0], seen[4])


def test_auto_check_redraw_off_and_null_interval_never_redraw():
    for decoder in ({"auto_check_redraw": False, "feature_redraw_interval": 1}, {"feature_redraw_interval": None}):
        model = build(vocab_size=VOCAB, decoder=decoder).train()
        before = projections(model)
        for _ in range(3):
            model(torch.randint(0, VOCAB, (1, 4)))
        if decoder["feature_redraw_interval"] is None:
            model.on_optimizer_step(1000)
        assert all(torch.equal(a, b) for a, b in zip(before, projections(model), strict=True))


def test_state_dict_has_no_duplicate_entries():
    model = build(vocab_size=VOCAB)
    state = model.state_dict()
    favors = [name for name, m in model.named_modules() if isinstance(m, FavorAttention)]
    assert sorted(k for k in state if k.endswith("projection")) == sorted(f"{name}.projection" for name in favors)
    storages: dict[int, str] = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        assert pointer not in storages or {storages[pointer], key} == {"embeddings.weight", "lm_head.weight"}, key
        storages[pointer] = key


def test_redrawn_features_are_saved(tmp_path):
    model = build(vocab_size=VOCAB)
    model.redraw_projections(torch.Generator().manual_seed(3))
    ids = torch.randint(0, VOCAB, (1, 8))
    directory = save(model, tmp_path / "lm")
    loaded = load(directory)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


# --- norms, residuals, feed-forward -----------------------------------------------------------------


def test_rezero_starts_as_identity_and_learns():
    model = build(decoder={"use_rezero": True}).train()
    x = torch.randn(2, 6, 32, requires_grad=True)
    out = model(x)
    assert torch.equal(out, x)
    out.square().sum().backward()
    gains = [p for name, p in model.named_parameters() if name.endswith("gain")]
    assert len(gains) == 2 * 2 and all(g.grad is not None and g.grad.abs().sum() > 0 for g in gains)


def test_prescalenorm():
    model = build(decoder={"use_scalenorm": True})
    norms = [m for m in model.modules() if isinstance(m, ScaleNorm)]
    assert len(norms) == 2 * 2 + 1 and not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    out = model(torch.randn(2, 6, 32) * 50)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((2, 6), 32**0.5))


@pytest.mark.parametrize("activation", ["GELU", "RELU", "SILU", "GEGLU", "REGLU", "SWIGLU"])
def test_activations(activation):
    model = build("tiny-encoder", encoder={"activation": activation, "d_ff": 2})
    feed_forward = next(m for m in model.modules() if isinstance(m, FeedForward))
    gated = activation.endswith("GLU")
    assert feed_forward.proj_in.out_features == 64 * (2 if gated else 1)
    assert feed_forward.proj_out.in_features == 64
    assert torch.isfinite(model(torch.randn(1, 5, 32))).all()


# --- building and saving ----------------------------------------------------------------------------


def test_device_is_honoured():
    model = create_model(config(decoder={"device": "meta"}))
    assert {p.device.type for p in model.parameters()} == {"meta"}
    if not torch.cuda.is_available():
        with pytest.raises(FoundryError, match="model.decoder.device is 'cuda' but CUDA is not available"):
            create_model(config(decoder={"device": "cuda"}))


def test_token_level_encoder_decoder_is_refused_by_the_builder():
    seq2seq = config(
        "tiny-encoder", model_type="encoder_decoder", decoder={"d_model": 32, "num_heads": 4, "num_layers": 1}
    )
    with pytest.raises(FoundryError, match="token-level encoder_decoder performer models are not provided"):
        create_model(seq2seq.evolve(vocab_size=VOCAB))


def test_embedding_level_model_has_no_token_embeddings():
    with pytest.raises(FoundryError, match="set model.vocab_size"):
        build().get_input_embeddings()
    with pytest.raises(FoundryError, match=r"x must be float embeddings of shape \(batch, length, 32\), got torch.int64"):
        build()(torch.tensor([[1, 2, 3]]), use_causal_mask=True)
    with pytest.raises(FoundryError, match=r"input_embeddings must be .* got torch.float32 \(1, 3, 16\)"):
        build("tiny-encoder")(torch.randn(1, 3, 16))


def test_resize_token_embeddings_keeps_rows_and_ties():
    model = build(vocab_size=VOCAB)
    old = model.embeddings.weight.detach().clone()
    model.resize_token_embeddings(VOCAB + 6)
    assert model.lm_head.weight is model.embeddings.weight and model.config.vocab_size == VOCAB + 6
    assert torch.equal(model.embeddings.weight[:VOCAB], old)
    assert model(torch.tensor([[VOCAB + 5]])).logits.shape == (1, 1, VOCAB + 6)


def test_embedding_level_save_load(tmp_path):
    seq2seq = build("tiny-encoder", model_type="encoder_decoder", decoder={"d_model": 48, "num_heads": 4, "num_layers": 1})
    source, target = torch.randn(1, 7, 32), torch.randn(1, 5, 48)
    loaded = load(save(seq2seq, tmp_path / "seq2seq"))
    assert type(loaded) is type(seq2seq)
    with torch.no_grad():
        assert torch.equal(loaded(source, target), seq2seq(source, target))
