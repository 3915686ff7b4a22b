"""The hybrid model: config checks, causality, padding, generation, losses, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from foundry_plugin_hybrid.config import PRESETS

import model_foundry
from model_foundry import ConfigError, FoundryError, cli
from model_foundry.config import load_config, load_model_config
from model_foundry.text.modeling import causal_lm_loss, masked_lm_loss

VOCAB = 40
EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "hybrid-small.yaml"


def tiny_config(**fields):
    return load_model_config({"architecture": "hybrid", "preset": "tiny", "vocab_size": VOCAB, **fields})


def tiny_model(seed: int = 0, **fields):
    torch.manual_seed(seed)
    return model_foundry.create_model(tiny_config(**fields)).eval()


def random_ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# --- config ----------------------------------------------------------------------------------


def test_presets_have_the_documented_sizes():
    expected = {
        "small": (512, 6, 8, 2048, 256),
        "base": (768, 12, 12, 3072, 512),
        "large": (1024, 24, 16, 4096, 1024),
    }
    for preset, sizes in expected.items():
        config = load_model_config({"architecture": "hybrid", "preset": preset})
        assert (
            config.hidden_size, config.num_layers, config.num_heads, config.intermediate_size, config.max_length
        ) == sizes
        assert (config.task, config.mlm_weight, config.clm_weight) == ("both", 0.5, 0.5)


def test_heads_must_divide_hidden_size_located(tmp_path):
    path = write(tmp_path, "model:\n  architecture: hybrid\n  preset: tiny\n  num_heads: 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:4:14: model.num_heads: must divide hidden_size (32), got 5" in str(error.value)


def test_both_weights_zero_is_rejected(tmp_path):
    path = write(tmp_path, "model:\n  architecture: hybrid\n  preset: tiny\n  mlm_weight: 0\n  clm_weight: 0\n")
    with pytest.raises(ConfigError, match="mlm_weight and clm_weight are both 0"):
        load_config(path)


def test_unknown_task_suggests_the_right_one(tmp_path):
    path = write(tmp_path, "model:\n  architecture: hybrid\n  preset: tiny\n  task: bth\n")
    with pytest.raises(ConfigError, match="'bth' is not one of: mlm, clm, both; did you mean 'both'"):
        load_config(path)


@pytest.mark.parametrize(
    ("task", "objective", "allowed"),
    [
        ("both", "hybrid", True),
        ("both", "causal_lm", False),
        ("both", "masked_lm", False),
        ("clm", "causal_lm", True),
        ("clm", "masked_lm", False),
        ("mlm", "masked_lm", True),
        ("mlm", "hybrid", True),
    ],
)
def test_objectives_follow_the_task(tmp_path, task, objective, allowed):
    path = write(
        tmp_path,
        f"model:\n  architecture: hybrid\n  preset: tiny\n  task: {task}\n"
        f"training:\n  objective: {objective}\n",
    )
    if allowed:
        assert load_config(path).training.objective == objective
    else:
        with pytest.raises(ConfigError, match=f"hybrid cannot train '{objective}' with these settings"):
            load_config(path)


def test_example_config_validates_and_trains_the_hybrid_objective():
    config = load_config(EXAMPLE_CONFIG)
    assert (config.model.architecture, config.model.preset, config.training.objective) == ("hybrid", "small", "hybrid")
    assert config.data.block_size <= config.model.max_length


def expected_parameters(preset: str, vocab: int, tied: bool = False) -> int:
    """The count the design implies: shared embeddings, two stacks of pre-LN blocks, two heads."""
    p = PRESETS[preset]()
    hidden, inner = p.hidden_size, p.intermediate_size
    block = 4 * hidden * hidden + 4 * hidden + 2 * hidden * inner + inner + hidden + 4 * hidden
    stack = p.num_layers * block + 2 * hidden
    heads = 2 * vocab if tied else 2 * (hidden * vocab + vocab)
    return (vocab + p.max_length) * hidden + 2 * stack + heads


@pytest.mark.parametrize("preset", ["tiny", "small", "base", "large"])
def test_foundry_build_json_of_the_presets(tmp_path, capsys, preset):
    path = write(tmp_path, f"model:\n  architecture: hybrid\n  preset: {preset}\n")
    assert cli.main(["build", str(path), "--json", "--set", "model.vocab_size=32000"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["architecture"], summary["preset"], summary["device"]) == ("hybrid", preset, "meta")
    assert summary["vocab_size"] == 32000
    assert summary["num_parameters"] == expected_parameters(preset, 32000)
    assert summary["memory"]["parameters"] == 4 * summary["num_parameters"]


def test_foundry_build_shows_tied_heads(tmp_path, capsys):
    path = write(tmp_path, "model:\n  architecture: hybrid\n  preset: small\n  vocab_size: 1000\n  tie_word_embeddings: true\n")
    assert cli.main(["build", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_parameters"] == expected_parameters("small", 1000, tied=True)
    assert {row["name"]: row["shared"] for row in summary["modules"]}["lm_head"] == ["token_embeddings"]


# --- causality and padding -------------------------------------------------------------------


def test_causal_branch_is_strictly_causal():
    model = tiny_model()
    ids = random_ids()
    cut = 5
    changed = ids.clone()
    changed[:, cut:] = (changed[:, cut:] + 7) % VOCAB
    with torch.no_grad():
        before, after = model(ids, task="clm").logits, model(changed, task="clm").logits
    torch.testing.assert_close(before[:, :cut], after[:, :cut])
    assert not torch.allclose(before[:, cut:], after[:, cut:])


def test_encoder_sees_both_directions():
    model = tiny_model()
    ids = random_ids()
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 7) % VOCAB
    with torch.no_grad():
        before, after = model(ids, task="mlm").logits, model(changed, task="mlm").logits
    assert not torch.allclose(before[:, 0], after[:, 0])


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_never_changes_real_positions(side):
    model = tiny_model()
    ids = random_ids(batch=1, length=7)
    pad = torch.zeros(1, 4, dtype=torch.long)
    real = torch.ones_like(ids)
    padded, mask = (
        (torch.cat([ids, pad], 1), torch.cat([real, pad], 1))
        if side == "right"
        else (torch.cat([pad, ids], 1), torch.cat([pad, real], 1))
    )
    positions = mask[0].bool()
    with torch.no_grad():
        alone = model(ids)
        batched = model(padded, attention_mask=mask)
    for key in ("logits", "mlm_logits"):
        assert torch.isfinite(batched[key]).all()
        torch.testing.assert_close(batched[key][0, positions], alone[key][0], atol=1e-5, rtol=1e-5)


# --- generation ------------------------------------------------------------------------------


def test_greedy_generation_equals_full_forward_argmax_at_every_step():
    model = tiny_model()
    prompt = random_ids(batch=2, length=4)
    generated = model.generate(prompt, max_new_tokens=10)
    assert generated.shape == (2, 14)
    with torch.no_grad():
        full = model(generated, task="clm").logits
    torch.testing.assert_close(generated[:, 4:], full[:, 3:-1].argmax(-1), rtol=0, atol=0)


def test_cached_step_logits_match_the_full_forward():
    model = tiny_model()
    ids = random_ids(batch=2, length=9)
    with torch.no_grad():
        logits, cache = model.next_token_logits(ids[:, :6])
        steps = [logits]
        for position in range(6, 9):
            logits, cache = model.next_token_logits(ids[:, position : position + 1], cache)
            steps.append(logits)
        full = model(ids, task="clm").logits
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:], atol=1e-5, rtol=1e-5)


def test_sequences_longer_than_max_length_are_refused():
    model = tiny_model(max_length=8)
    with pytest.raises(FoundryError, match="longer than this model's max_length"):
        model(random_ids(length=9))
    assert model.max_sequence_length == 8


# --- losses and tasks ------------------------------------------------------------------------


def test_loss_is_the_weighted_sum_of_the_branch_losses():
    model = tiny_model(mlm_weight=0.3, clm_weight=0.7)
    ids = random_ids()
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, ::3] = ids[:, ::3]
    mlm_inputs = ids.masked_fill(mlm_labels != -100, 0)
    out = model(ids, labels=ids, mlm_input_ids=mlm_inputs, mlm_labels=mlm_labels)
    torch.testing.assert_close(out.clm_loss, causal_lm_loss(out.logits, ids))
    torch.testing.assert_close(out.mlm_loss, masked_lm_loss(out.mlm_logits, mlm_labels))
    torch.testing.assert_close(out.loss, 0.3 * out.mlm_loss + 0.7 * out.clm_loss)
    assert not torch.allclose(out.mlm_loss, out.clm_loss)


def test_the_encoder_reads_the_masked_input():
    model = tiny_model()
    ids = random_ids()
    masked = ids.clone()
    masked[:, 2] = 0
    with torch.no_grad():
        plain, with_masked = model(ids), model(ids, mlm_input_ids=masked)
    torch.testing.assert_close(plain.logits, with_masked.logits)
    assert not torch.allclose(plain.mlm_logits, with_masked.mlm_logits)


def test_a_single_task_builds_only_its_branch():
    ids = random_ids()
    mlm = tiny_model(task="mlm")
    assert mlm.decoder is None and mlm.lm_head is None and not mlm.supports_generation
    out = mlm(ids, labels=ids)  # a masked_lm batch: labels are the MLM targets
    assert set(out) == {"loss", "logits", "mlm_logits", "mlm_loss"}
    torch.testing.assert_close(out.loss, masked_lm_loss(out.logits, ids))
    with pytest.raises(FoundryError, match="does not support generation"):
        mlm.generate(ids[:, :3], max_new_tokens=2)
    with pytest.raises(FoundryError, match="task 'clm' needs the decoder, which this model .* does not have"):
        mlm(ids, task="clm")

    clm = tiny_model(task="clm")
    assert clm.encoder is None and clm.mlm_head is None and clm.supports_generation
    out = clm(ids, labels=ids)
    assert set(out) == {"loss", "logits", "clm_loss"}
    torch.testing.assert_close(out.loss, causal_lm_loss(out.logits, ids))
    both = tiny_model()  # the two single-task models each hold a copy of the shared embeddings
    assert mlm.num_parameters() + clm.num_parameters() == both.num_parameters() + both.get_input_embeddings().weight.numel() + 64 * 32


def test_a_call_can_run_one_branch_of_a_both_model():
    model = tiny_model().train()
    ids = random_ids()
    model(ids, labels=ids, task="mlm").loss.backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_unknown_task_in_forward_is_a_user_error():
    with pytest.raises(FoundryError, match="task must be one of"):
        tiny_model()(random_ids(), task="causal")


# --- embeddings and checkpoints --------------------------------------------------------------


def test_tied_heads_share_the_embedding_matrix():
    untied, tied = tiny_model(), tiny_model(tie_word_embeddings=True)
    assert tied.lm_head.weight is tied.get_input_embeddings().weight is tied.mlm_head.weight
    assert untied.num_parameters() - tied.num_parameters() == 2 * VOCAB * 32


@pytest.mark.parametrize("tie", [False, True])
def test_resize_keeps_old_rows_and_updates_the_config(tie):
    model = tiny_model(tie_word_embeddings=tie)
    ids = random_ids()
    with torch.no_grad():
        before = model(ids).logits
    model.resize_token_embeddings(VOCAB + 8)
    assert model.config.vocab_size == VOCAB + 8
    assert model.get_input_embeddings().num_embeddings == VOCAB + 8
    assert (model.lm_head.weight is model.token_embeddings.weight) == tie
    with torch.no_grad():
        after = model(ids).logits
        model(torch.full((1, 3), VOCAB + 7))
    assert after.shape[-1] == VOCAB + 8
    torch.testing.assert_close(after[..., :VOCAB], before)


@pytest.mark.parametrize("tie", [False, True])
def test_save_and_load_give_identical_outputs(tmp_path, tie):
    model = tiny_model(tie_word_embeddings=tie, task="both", mlm_weight=0.25, clm_weight=0.75)
    model.save_pretrained(tmp_path / "checkpoint")
    loaded = model_foundry.load(tmp_path / "checkpoint")
    assert loaded.config.params == model.config.params
    ids = random_ids()
    with torch.no_grad():
        expected, got = model(ids, labels=ids), loaded(ids, labels=ids)
    for key in ("logits", "mlm_logits", "loss"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
