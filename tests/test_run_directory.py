"""The run directory: no run replaces or interleaves with another, resume picks the right
checkpoint (or says why not), and a failing run keeps what it had (issue 23, items 1-4, 7, 9, 13)."""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from test_training import TinyPlugin, losses_of, records, write_config

from model_foundry import cli
from model_foundry.config import load_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.testing import isolated_registry

# Checkpoints 4, 8 and 12 (all kept), every step logged, no evaluation: small and fast.
STEPS = {"max_steps": 12, "save_every": 4, "keep_checkpoints": 3, "log_every": 1, "eval_every": 0, "warmup_steps": 2}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``(config path, run directory, losses)`` of a run of the tiny model that finished at step 12."""
    from model_foundry.training import train

    root = tmp_path_factory.mktemp("finished")
    config_path = write_config(root, training=STEPS)
    with isolated_registry(TinyPlugin()):
        train(load_config(config_path))
    return config_path, root / "run", losses_of(root / "run")


@pytest.fixture
def tiny():
    """The tiny language model of test_training, registered directly."""
    with isolated_registry(TinyPlugin()) as registry:
        yield registry


def copy_run(finished, destination, killed_after=None):
    """A copy of the finished run; ``killed_after``: without final/ and the checkpoints after that step."""
    shutil.copytree(finished[1], destination)
    if killed_after is not None:
        shutil.rmtree(destination / "final")
        for step in range(killed_after + 1, 13):
            shutil.rmtree(destination / f"checkpoint-{step}", ignore_errors=True)
    return destination


def train_into(config_path, run, *args):
    return cli.main(["train", config_path, "--set", f"training.output_dir={run}", *args])


def open_files_under(directory):
    """The files under ``directory`` this process has open (Linux's /proc)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return [target for target in targets if target.startswith(f"{directory}{os.sep}")]


def files_of(directory):
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.rglob("*") if p.is_file()}


# --- 1: the resume hint, --resume PATH, a finished run ---------------------------------------------


def test_the_interrupt_hint_repeats_the_overrides_and_resumes_that_run(tmp_path, tiny, capsys, finished):
    config_path, own_run, expected = finished
    run = tmp_path / "my run"  # a space: the hint must quote it
    overrides = ["--set", f"training.output_dir={run}", "--set", "model.ctrl_c_at_step=5"]
    before = files_of(own_run)
    assert cli.main(["train", config_path, *overrides]) == 130
    hint = capsys.readouterr().err.split("resume with: ")[1].strip()
    assert hint == shlex.join(["foundry", "train", config_path, *overrides, "--resume"])
    assert cli.main(shlex.split(hint)[1:]) == 0
    assert losses_of(run) == expected
    assert files_of(own_run) == before  # the config's own output_dir, a finished run, untouched


def test_resume_path_takes_a_checkpoint_or_a_run_directory(tmp_path, tiny, capsys, finished):
    config_path, own_run, expected = finished
    run = copy_run(finished, tmp_path / "elsewhere")
    # An older checkpoint of a finished run: the steps after it are trained again, the same way.
    assert cli.main(["train", config_path, "--resume", str(run / "checkpoint-4")]) == 0
    assert f"resuming from {run / 'checkpoint-4'} at step 4" in capsys.readouterr().out
    assert losses_of(run) == expected
    assert sorted(os.listdir(run)) == ["checkpoint-12", "checkpoint-4", "checkpoint-8", "final", "loss_curve.png", "metrics.jsonl"]
    # A run directory: its newest checkpoint (here: finished, so nothing to do).
    assert cli.main(["train", config_path, "--resume", str(run)]) == 2
    assert f"the run in {str(run)!r} is finished" in capsys.readouterr().err
    assert cli.main(["train", config_path, "--resume", str(tmp_path / "absent")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, tiny, capsys, finished):
    config_path, _, _ = finished
    run = copy_run(finished, tmp_path / "run")
    before = files_of(run)
    assert train_into(config_path, run, "--resume") == 2
    err = capsys.readouterr().err
    assert "is finished: checkpoint-12 reached training.max_steps (12); its model is in" in err
    assert "Nothing was changed" in err and "--set training.max_steps=N --resume" in err
    assert files_of(run) == before and sorted(os.listdir(run)) == sorted({p.split(os.sep)[0] for p in before})


# --- 2: an earlier run is replaced only on request -------------------------------------------------


def test_an_earlier_run_is_kept_unless_overwrite_is_given(tmp_path, tiny, capsys, finished):
    from model_foundry.training import train

    config_path, _, _ = finished
    run = copy_run(finished, tmp_path / "run")
    before = files_of(run)
    assert train_into(config_path, run) == 2
    err = capsys.readouterr().err
    assert f"{str(run)!r} holds an earlier run (checkpoint-12, checkpoint-4, checkpoint-8, final, metrics.jsonl); " \
           "continue it with --resume, replace it with --overwrite" in err
    assert files_of(run) == before
    # Only metrics.jsonl: a run killed before its first checkpoint is an earlier run too.
    early = tmp_path / "early"
    early.mkdir()
    (early / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    with pytest.raises(FoundryError, match="holds an earlier run \\(metrics.jsonl\\)"):
        train(load_config(config_path, [f"training.output_dir={early}"]))
    with pytest.raises(FoundryError, match="exclude each other"):
        train(load_config(config_path, [f"training.output_dir={early}"]), resume=True, overwrite=True)
    with pytest.raises(SystemExit):
        train_into(config_path, run, "--resume", "--overwrite")
    assert "not allowed with argument" in capsys.readouterr().err
    # --overwrite: the earlier run's outputs go, the new run's come.
    assert train_into(config_path, run, "--set", "training.max_steps=4", "--overwrite") == 0
    assert sorted(os.listdir(run)) == ["checkpoint-4", "final", "loss_curve.png", "metrics.jsonl"]
    assert max(r["step"] for r in records(run)) == 4


# --- 3: one run at a time ----------------------------------------------------------------------

HOLD = """\
import sys, time
from model_foundry.training.rundir import claim

with claim(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_run_at_a_time_and_the_lock_dies_with_its_process(tmp_path, tiny, capsys, finished):
    config_path, _, _ = finished
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train_into(config_path, run) == 2
        assert f"{str(run)!r} is in use by another run (pid {holder.pid})" in capsys.readouterr().err
        assert os.listdir(run) == [".foundry.lock"]
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert train_into(config_path, run, "--set", "training.max_steps=4") == 0  # SIGKILL released it
    assert not (run / ".foundry.lock").exists()


# --- 4: pruning renames, then deletes ------------------------------------------------------------


def fake_checkpoint(run, step, files=("foundry.json", "model.safetensors", "training_state.json", "training_state.safetensors")):
    directory = run / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    for name in files:
        (directory / name).write_text("x")


def test_pruning_renames_each_checkpoint_before_deleting_it(tmp_path, monkeypatch):
    from model_foundry.training import rundir

    for step in (1, 2, 3):
        fake_checkpoint(tmp_path, step)
    monkeypatch.setattr(shutil, "rmtree", lambda path, ignore_errors=False: None)  # killed before deleting anything
    rundir.prune(str(tmp_path), keep=1)
    names = sorted(os.listdir(tmp_path))
    assert names[-1] == "checkpoint-3" and len(names) == 3
    assert all(rundir.STAGING_PATTERN.match(name) for name in names[:-1]), names
    monkeypatch.undo()
    fake_checkpoint(tmp_path, 2, files=("config.yaml",))  # half deleted in place by an older version
    assert [step for step, _ in rundir.list_checkpoints(str(tmp_path))] == [3]
    rundir.clean(str(tmp_path), resume_step=3)
    assert os.listdir(tmp_path) == ["checkpoint-3"]


def test_checkpoints_are_flushed_to_disk_only_where_a_crash_of_the_machine_needs_it(tmp_path, tiny, monkeypatch):
    """Training checkpoints are written without waiting for the disk; before pruning, the oldest one that
    stays is flushed (so one always survives a crash of the machine), and final/ is flushed as it is written."""
    from model_foundry import checkpoint
    from model_foundry.training import train

    flushed = []
    run = str(tmp_path / "run")
    monkeypatch.setattr(checkpoint, "flush_to_disk",
                        lambda root: flushed.append(os.path.basename(root)) if os.path.dirname(root) == run else None)
    config_path = write_config(tmp_path, training={**STEPS, "keep_checkpoints": 2})
    train(load_config(config_path))
    # Checkpoints 4, 8, 12 unflushed; pruning 4 after 12 is written first flushes 8; final/ is staged, then flushed.
    assert flushed[0] == "checkpoint-8" and len(flushed) == 2
    assert flushed[1].startswith(".final.tmp-")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoint-12")) == sorted(os.listdir(tmp_path / "run" / "checkpoint-8"))


def test_a_resume_removes_what_a_kill_during_pruning_left(tmp_path, tiny, capsys, finished):
    config_path, _, expected = finished
    run = copy_run(finished, tmp_path / "run", killed_after=8)
    for name in os.listdir(run / "checkpoint-8"):  # half deleted: only config.yaml is left
        if name != "config.yaml":
            os.remove(run / "checkpoint-8" / name)
    shutil.copytree(run / "checkpoint-4", run / ".checkpoint-4.old-x7k2" / "checkpoint-4")
    assert train_into(config_path, run, "--resume") == 0
    assert f"resuming from {run / 'checkpoint-4'} at step 4" in capsys.readouterr().out
    assert losses_of(run) == expected
    assert sorted(os.listdir(run)) == ["checkpoint-12", "checkpoint-4", "checkpoint-8", "final", "loss_curve.png", "metrics.jsonl"]


# --- 7: unreadable training state: the checkpoint before it; a changed model ---------------------


def _rewrite_tensors(path, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _first_moment(tensors):
    name = next(k for k in sorted(tensors) if k.endswith(".exp_avg"))
    tensors[name] = tensors[name].reshape(-1)[:3].clone()


CORRUPTIONS = {
    "training_state.json not JSON": lambda c: (c / "training_state.json").write_text("{not json"),
    "training_state.json a list": lambda c: (c / "training_state.json").write_text("[]"),
    "training_state.json of another step": lambda c: (c / "training_state.json").write_text(
        (c / "training_state.json").read_text().replace('"step": 8', '"step": 7', 1)),
    "training_state.safetensors truncated": lambda c: _truncate(c / "training_state.safetensors"),
    "an optimizer moment of the wrong shape": lambda c: _rewrite_tensors(str(c / "training_state.safetensors"), _first_moment),
    "model.safetensors truncated": lambda c: _truncate(c / "model.safetensors"),
    "a weight of the wrong shape": lambda c: _rewrite_tensors(
        str(c / "model.safetensors"), lambda t: t.update({"head.bias": t["head.bias"][:-1].clone()})),
    "tokenizer.json corrupt": lambda c: (c / "tokenizer.json").write_text('{"model": 1'),
    "config.yaml without a model": lambda c: (c / "config.yaml").write_text("- a list\n"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, tiny, capsys, finished, corruption):
    config_path, _, expected = finished
    run = copy_run(finished, tmp_path / "run", killed_after=8)
    CORRUPTIONS[corruption](run / "checkpoint-8")
    assert train_into(config_path, run, "--resume") == 0
    out, err = capsys.readouterr()
    assert "warning: skipping unreadable checkpoint checkpoint-8: " in err
    assert f"resuming from {run / 'checkpoint-4'} at step 4" in out
    assert losses_of(run) == expected


def test_no_readable_checkpoint_or_another_model_is_a_clear_error(tmp_path, tiny, capsys, finished):
    config_path, _, _ = finished
    run = copy_run(finished, tmp_path / "run", killed_after=8)
    before = files_of(run)
    assert train_into(config_path, run, "--set", "model.width=32", "--set", "model.dropout=0.2", "--resume") == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {run / 'checkpoint-8'}: it was trained with another model" in err
    assert "model.width: 16 there, 32 now" in err and "model.dropout: 0.1 there, 0.2 now" in err
    assert "Traceback" not in err and files_of(run) == before
    (run / "checkpoint-8" / "training_state.json").write_text("{")
    _truncate(run / "checkpoint-4" / "model.safetensors")
    assert train_into(config_path, run, "--resume") == 2
    err = capsys.readouterr().err
    assert f"cannot resume: no readable training checkpoint in {str(run)!r}" in err
    assert "checkpoint-8: JSONDecodeError" in err and "checkpoint-4: SafetensorError" in err and "--overwrite" in err
    # A checkpoint named explicitly is the one resumed from, or none.
    assert cli.main(["train", config_path, "--resume", str(run / "checkpoint-8")]) == 2
    assert "checkpoint-4" not in capsys.readouterr().err


# --- 9: an unwritable output_dir, a full disk ---------------------------------------------------


def test_an_unwritable_output_dir_is_found_before_anything_is_set_up(tmp_path, tiny, capsys, monkeypatch):
    import tempfile

    config_path = write_config(tmp_path)
    (tmp_path / "a-file").write_text("")
    assert train_into(config_path, tmp_path / "a-file" / "run") == 2
    assert f"training.output_dir {str(tmp_path / 'a-file' / 'run')!r} is not writable (Not a directory)" in capsys.readouterr().err

    def read_only(*_args, **_kwargs):  # the tests may run as root, whom permissions do not stop
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert cli.main(["train", config_path]) == 2
    assert "is not writable (Read-only file system)" in capsys.readouterr().err
    # Found before the tokenizer is trained and the data cached, and the directory it made is gone again.
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_exit_2_and_the_run_resumes_exactly(tmp_path, tiny, capsys, monkeypatch, finished):
    from model_foundry import checkpoint

    config_path, _, expected = finished
    write_weights, calls = checkpoint._write_weights, []

    def full_at_the_second_checkpoint(model, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        write_weights(model, path)

    monkeypatch.setattr(checkpoint, "_write_weights", full_at_the_second_checkpoint)
    run = tmp_path / "run"
    assert train_into(config_path, run) == 2
    err = capsys.readouterr().err
    assert "no space left on the device while writing" in err and "Traceback" not in err
    assert f"the newest complete checkpoint is {run / 'checkpoint-4'}. Free some space, then resume with: foundry train" in err
    assert sorted(os.listdir(run)) == ["checkpoint-4", "metrics.jsonl"]  # no half-written checkpoint-8, no lock
    monkeypatch.undo()
    assert train_into(config_path, run, "--resume") == 0
    assert losses_of(run) == expected


# --- 13: a loss that is not a number -----------------------------------------------------------


def test_a_non_finite_loss_stops_the_run_at_its_step_and_keeps_the_last_checkpoint(tmp_path, tiny, capsys, monkeypatch, finished):
    import math

    from model_foundry.training import loop

    config_path, _, expected = finished
    default_step = loop.default_step

    def nan_at_step_6(model, batches, context):
        outcome = default_step(model, batches, context)
        return {**outcome, "loss": outcome["loss"] * math.nan} if context.step == 6 else outcome

    monkeypatch.setattr(loop, "default_step", nan_at_step_6)
    run = tmp_path / "run"
    assert train_into(config_path, run) == 2
    err = capsys.readouterr().err
    assert "the training loss is not a finite number since step 6: training stopped" in err
    assert f"the last good checkpoint is {run / 'checkpoint-4'}" in err
    assert sorted(os.listdir(run)) == ["checkpoint-4", "metrics.jsonl"]  # no final/
    assert losses_of(run) == expected[:5]
    # In-process, the run's metrics file is closed although the error (and the run it holds) lives on.
    from model_foundry.training import train

    with pytest.raises(FoundryError, match="not a finite number since step 6") as caught:
        train(load_config(config_path, [f"training.output_dir={tmp_path / 'in-process'}"]))
    assert caught.traceback and open_files_under(tmp_path / "in-process") == []
    # A learning rate that makes the weights overflow, caught the same way.
    monkeypatch.undo()
    diverging = tmp_path / "diverging"
    assert train_into(config_path, diverging, "--set", "training.learning_rate=1e30") == 2
    assert "the training loss is not a finite number since step" in capsys.readouterr().err
    assert not (diverging / "final").exists()
    assert all(math.isfinite(value) for r in records(diverging) for key, value in r.items() if key.endswith("loss"))


def test_the_loss_watch_names_the_first_step_with_a_value_that_is_not_finite(tmp_path):
    import torch

    from model_foundry.training.rundir import LossWatch

    def first_bad(*steps):
        watch = LossWatch(str(tmp_path), 0.1, None, "cpu")
        for step, losses in steps:
            watch.observe(step, {key: torch.tensor(value) for key, value in losses.items()})
        with pytest.raises(FoundryError, match="not a finite number since step") as caught:
            watch.check()
        return int(str(caught.value).split("since step ")[1].split(":")[0])

    nan, inf = float("nan"), float("inf")
    assert first_bad((1, {"loss": 1.0}), (2, {"loss": 2.0, "kl_loss": inf}), (3, {"loss": nan})) == 2
    assert first_bad((4, {"loss": [1.0, 2.0]}), (5, {"loss": 1.0, "kl_loss": [0.5, nan]}), (6, {"loss": -inf})) == 5
    watch = LossWatch(str(tmp_path), 0.1, None, "cpu")
    watch.observe(1, {"loss": torch.tensor(1.0)})
    watch.check()  # finite: nothing raised, and the steps checked are forgotten
    watch.observe(2, {"loss": torch.tensor(nan)})
    with pytest.raises(FoundryError, match="since step 2"):
        watch.check()


def test_non_finite_optimizer_settings_are_config_errors(tmp_path):
    config_path = write_config(tmp_path, training={"optimizers": {"generator": {"learning_rate": 12345.0}}})
    with open(config_path, encoding="utf-8") as handle:
        text = handle.read().replace("12345.0", ".inf")
    with open(config_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_path, ["training.learning_rate=.inf", "training.weight_decay=.inf", "training.max_grad_norm=.inf"])
    message = str(caught.value)
    for key in ("learning_rate", "weight_decay", "max_grad_norm", "optimizers.generator.learning_rate"):
        assert f"training.{key}: must be a finite number, got inf" in message
