"""Learning-rate schedules as training applies them (equal to transformers' at every step), a warmup
longer than the run, and the quickstart shortened from the command line."""

from __future__ import annotations

import os

import pytest
from test_training import REPO, TinyPlugin, records, write_config, write_text

from model_foundry import cli
from model_foundry.config import TrainingConfig
from model_foundry.testing import isolated_registry

PEAK = 0.02


def torch_optimizer():
    import torch

    return torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=PEAK)


def applied_rates(steps: int, **training) -> list[float]:
    """The learning rate each of ``steps`` optimizer steps uses, scheduled as training schedules it."""
    from model_foundry.training.loop import lr_scheduler

    optimizer = torch_optimizer()
    scheduler = lr_scheduler(optimizer, TrainingConfig(learning_rate=PEAK, **training))
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


# Warmup from min_lr_ratio x the peak (0.1 x 0.02) over 2 steps, then down to it at max_steps.
@pytest.mark.parametrize(("schedule", "expected"), [
    ("cosine", [0.002, 0.011, 0.02, 0.0173640, 0.011, 0.0046360]),
    ("linear", [0.002, 0.011, 0.02, 0.0155, 0.011, 0.0065]),
    ("constant", [0.0, 0.01, 0.02, 0.02, 0.02, 0.02]),  # its warmup starts from 0
])
def test_each_schedule_warms_up_then_decays_to_the_floor(schedule, expected):
    rates = applied_rates(6, lr_scheduler=schedule, warmup_steps=2, max_steps=6, min_lr_ratio=0.1)
    assert rates == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize(("warmup", "total", "floor"), [(0, 50, 0.0), (7, 50, 0.1), (10, 10, 0.05), (30, 12, 0.2)])
def test_each_schedule_equals_transformers_at_every_step(schedule, warmup, total, floor):
    import transformers

    reference = torch_optimizer()
    if schedule == "constant":
        expected = transformers.get_constant_schedule_with_warmup(reference, warmup)
    else:
        expected = transformers.get_wsd_schedule(reference, num_warmup_steps=warmup, num_stable_steps=0,
                                                 num_decay_steps=max(0, total - warmup), decay_type=schedule,
                                                 min_lr_ratio=floor)
    ours = applied_rates(total + 5, lr_scheduler=schedule, warmup_steps=warmup, max_steps=total, min_lr_ratio=floor)
    theirs = []
    for _ in range(total + 5):
        theirs.append(reference.param_groups[0]["lr"])
        reference.step()
        expected.step()
    assert ours == theirs  # exactly: the same arithmetic


def test_a_warmup_longer_than_the_run_never_completes():
    rates = applied_rates(5, warmup_steps=10, max_steps=5, min_lr_ratio=0.1)
    assert rates == pytest.approx([0.002, 0.0038, 0.0056, 0.0074, 0.0092])


def test_a_run_shortened_below_its_warmup_trains(tmp_path, capsys):
    config = write_config(tmp_path, training={"warmup_steps": 50, "learning_rate": PEAK, "min_lr_ratio": 0.0})
    with isolated_registry(TinyPlugin()):
        assert cli.main(["train", config, "--set", "training.max_steps=4", "--set", "training.log_every=1"]) == 0
    logged = [r["lr"] for r in records(tmp_path / "run") if "lr" in r]
    # The rate logged after step k is the next step's: k/50 of the peak, still rising when the run ends.
    assert logged == pytest.approx([PEAK * k / 50 for k in range(1, 5)])
    assert os.path.isdir(tmp_path / "run" / "final")


def test_a_run_resumed_in_its_warmup_continues_the_schedule_exactly(tmp_path, capsys):
    import shutil

    from model_foundry.config import load_config
    from model_foundry.training import train

    path = write_config(tmp_path, training={
        "max_steps": 12, "warmup_steps": 8, "save_every": 4, "keep_checkpoints": 3, "log_every": 1, "eval_every": 0,
    })
    with isolated_registry(TinyPlugin()):
        config = load_config(path)
        train(config)
        timing = ("elapsed", "tokens_per_sec")
        expected = [{k: v for k, v in r.items() if k not in timing} for r in records(tmp_path / "run")]
        for name in ("checkpoint-8", "checkpoint-12", "final"):
            shutil.rmtree(tmp_path / "run" / name)
        train(config, resume=True)  # from step 4, halfway through the warmup
    assert [{k: v for k, v in r.items() if k not in timing} for r in records(tmp_path / "run")] == expected


def test_the_quickstart_shortened_from_the_command_line_validates(tmp_path, capsys):
    text = write_text(tmp_path / "text.txt", repeat=200)
    quickstart = os.path.join(REPO, "configs", "quickstart.yaml")
    data = [f"data.train_files=[{text}]", f"data.validation_files=[{text}]"]
    arguments = ["validate", quickstart, "--set", "training.max_steps=30", *(x for item in data for x in ("--set", item))]
    assert cli.main(arguments) == 0, capsys.readouterr().err
