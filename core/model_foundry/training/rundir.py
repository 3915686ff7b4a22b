"""The run directory (``training.output_dir``): one run at a time, what an earlier run left there,
and where a resumed run starts.

* :func:`claim` makes the directory, proves it writable and holds ``.foundry.lock`` (an
  exclusive ``flock``) for the whole run, before the tokenizer, data and model are set up;
* :func:`earlier_run` / :func:`resume_candidates` decide between starting afresh, refusing
  and resuming (the newest checkpoint that reads, else the one before it);
* :func:`restore` loads a resumed run's weights and training state, falling back in the same way;
* :func:`clean`, :func:`prune` and :func:`discard` remove outputs by renaming them to a hidden
  staging name first, so a kill leaves either the whole checkpoint or a name the next run removes;
* :class:`LossWatch` stops a run whose loss is no longer finite before it saves anything;
* :func:`data_cache_dir` puts the data cache beside the run directory unless the data says where.

See docs/training.md ("The run directory").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import attrs
import torch

from model_foundry.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint, read_yaml_plain
from model_foundry.errors import FoundryError
from model_foundry.training.reporting import LOSS_CURVE_FILE, METRICS_FILE
from model_foundry.training.state import STATE_JSON, is_training_checkpoint, read_training_state

if TYPE_CHECKING:
    from model_foundry.config import DataSection

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
FINAL_DIR = "final"
SAMPLES_DIR = "samples"
LOCK_FILE = ".foundry.lock"
# What atomic_directory and discard leave behind when a process is killed in the middle of a write or a removal.
STAGING_PATTERN = re.compile(r"^\.(checkpoint-\d+|final|samples)\.(tmp|old)-")
# A checkpoint that cannot be read fails with one of these (from JSON, safetensors, torch, or the
# project's own checks of a checkpoint's files).
UNREADABLE: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, FoundryError)
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _warn(message: str) -> None:
    from model_foundry.training.loop import warn  # the loop imports this module

    warn(message)


# --- what is in a run directory ----------------------------------------------------------------


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete training checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if match and _complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str:
    """The newest complete training checkpoint, or a FoundryError saying there is none."""
    found = list_checkpoints(output_dir)
    if not found:
        raise FoundryError(_nothing_to_resume(output_dir))
    return found[-1][1]


def _complete(path: str) -> bool:
    return is_checkpoint(path) and is_training_checkpoint(path)


def _nothing_to_resume(output_dir: str) -> str:
    return (
        f"nothing to resume: no training checkpoint (checkpoint-<step>/ with {STATE_JSON}) in {output_dir!r}; "
        "run without --resume to start training" + (", with --overwrite to replace what is there" if earlier_run(output_dir) else "")
    )


def earlier_run(output_dir: str) -> list[str]:
    """The names of an earlier run's outputs in ``output_dir``: checkpoint directories, ``final/``, ``metrics.jsonl``."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(
        name for name in os.listdir(output_dir)
        if CHECKPOINT_PATTERN.match(name) or name in (FINAL_DIR, METRICS_FILE)
    )


def refuse_earlier_run(output_dir: str, overwrite: bool) -> None:
    """A FoundryError when ``output_dir`` holds a run and neither ``--resume`` nor ``--overwrite`` was given."""
    found = earlier_run(output_dir)
    if found and not overwrite:
        raise FoundryError(
            f"{output_dir!r} holds an earlier run ({', '.join(found)}); continue it with --resume, "
            "replace it with --overwrite (its checkpoints, final/ and metrics are deleted), "
            "or set another training.output_dir"
        )


# --- removing outputs --------------------------------------------------------------------------


def discard(path: str) -> None:
    """Remove a file, or a directory by renaming it to a hidden staging name and then deleting that:
    a kill in the middle leaves a name :func:`clean` removes, never a half-deleted checkpoint."""
    if os.path.isdir(path):
        parent, name = os.path.split(path)
        retired = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.replace(path, os.path.join(retired, name))
        shutil.rmtree(retired, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def prune(output_dir: str, keep: int) -> None:
    """Remove all but the newest ``keep`` training checkpoints.

    Training checkpoints are written without waiting for the disk; the oldest one that stays is
    flushed before any is removed, so that one survives even a crash of the machine. Written a save
    interval ago, it is usually on the disk already and the flush costs little."""
    from model_foundry.checkpoint import flush_to_disk

    checkpoints = list_checkpoints(output_dir)
    if len(checkpoints) <= keep:
        return
    flush_to_disk(checkpoints[-keep][1])
    for _, old in checkpoints[:-keep]:
        discard(old)


def clean(output_dir: str, resume_step: int | None) -> None:
    """Remove what killed runs left (staging directories, checkpoint directories missing files)
    and outputs the run replaces: all of an earlier run's when starting afresh (``resume_step``
    None), else the checkpoints after ``resume_step`` (steps the resumed run does again)."""
    complete = {path: step for step, path in list_checkpoints(output_dir)}
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if STAGING_PATTERN.match(name):
            shutil.rmtree(path, ignore_errors=True)
        elif CHECKPOINT_PATTERN.match(name) and (
            path not in complete or resume_step is None or complete[path] > resume_step
        ):
            discard(path)
    if resume_step is None:
        for name in (FINAL_DIR, METRICS_FILE, LOSS_CURVE_FILE, SAMPLES_DIR):
            discard(os.path.join(output_dir, name))


# --- one run at a time ------------------------------------------------------------------------


def is_main_process() -> bool:
    """Whether this is the process that writes (rank 0). Read from the launcher's environment
    because the run directory is claimed before Accelerate starts."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def claim(output_dir: str, hold: bool = True) -> Iterator[None]:
    """Hold ``output_dir`` for one run (``hold``: this process writes; the others only read).

    Creates the directory, proves it writable and takes the lock, else a FoundryError; a
    directory this made and nothing was written in is removed again on the way out. The lock is
    an ``flock``, released by the kernel when the process ends, also by SIGKILL.
    """
    if not hold:
        yield
        return
    created = _missing_ancestors(output_dir)
    try:
        try:
            os.makedirs(output_dir, exist_ok=True)
            descriptor, probe = tempfile.mkstemp(prefix=".foundry-write-probe-", dir=output_dir)
            os.close(descriptor)
            os.remove(probe)
        except OSError as error:
            raise FoundryError(
                f"training.output_dir {output_dir!r} is not writable ({error.strerror or error}); "
                "choose a directory this user can write to"
            ) from None
        descriptor = _lock(output_dir)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(output_dir, LOCK_FILE))
            os.close(descriptor)
    finally:
        for directory in created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                os.rmdir(directory)


def _missing_ancestors(directory: str) -> list[str]:
    """``directory`` and those of its parents that do not exist, deepest first."""
    missing = []
    while directory and not os.path.exists(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return missing


def _lock(output_dir: str) -> int:
    path = os.path.join(output_dir, LOCK_FILE)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise FoundryError(
                f"{output_dir!r} is in use by another run (pid {holder}); wait for it to end, "
                "or set another training.output_dir"
            ) from None
        # The holder removes the file as it ends: a lock on a file no longer at ``path`` guards nothing.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(descriptor), os.stat(path)):
                break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return descriptor


@contextlib.contextmanager
def out_of_space_is_reported(output_dir: str, hint: str) -> Iterator[None]:
    """Turn a full disk (or quota) while the block writes into a FoundryError naming what survived."""
    try:
        yield
    except OSError as error:
        if error.errno not in OUT_OF_SPACE:
            raise
        found = list_checkpoints(output_dir)
        kept = f"the newest complete checkpoint is {found[-1][1]}" if found else "no checkpoint was completed"
        raise FoundryError(
            f"no space left on the device while writing {error.filename or output_dir!r}; {kept}. "
            f"Free some space, then {hint}"
        ) from None


def data_cache_dir(data: DataSection, output_dir: str) -> str:
    """Where a run's derived data goes (token ids, decoded files): the data's own ``cache_dir``
    where its kind has one and it is set, else ``.foundry-cache`` beside the run directory."""
    own = data.params.cache_dir if "cache_dir" in attrs.fields_dict(type(data.params)) else None
    return own or os.path.join(os.path.dirname(output_dir), ".foundry-cache")


def resume_command(config_path: str | None, overrides: Sequence[str], run_dir: str, output_dir: str) -> str:
    """The command that resumes this run: the config, its ``--set`` overrides, and the run
    directory when it is not the config's own ``output_dir``."""
    words = ["foundry", "train", config_path or "CONFIG"]
    for override in overrides:
        words += ["--set", override]
    words.append("--resume")
    if os.path.abspath(run_dir) != os.path.abspath(output_dir):
        relative = os.path.relpath(run_dir)
        words.append(run_dir if relative.startswith("..") else relative)
    return shlex.join(words)


# --- where a resumed run starts ----------------------------------------------------------------


def resolve_resume(resume: bool | str, output_dir: str) -> tuple[str, str | None]:
    """``(run directory, the checkpoint asked for or None)`` for ``--resume [PATH]``: PATH is a
    ``checkpoint-<step>`` directory (its run directory is its parent) or a run directory."""
    if isinstance(resume, bool):
        return os.path.abspath(output_dir), None
    path = os.path.abspath(resume)
    if not os.path.isdir(path):
        raise FoundryError(f"--resume {resume}: no such directory (give a checkpoint-<step>/ directory or a run's output_dir)")
    if CHECKPOINT_PATTERN.match(os.path.basename(path)):
        if not _complete(path):
            raise FoundryError(f"--resume {resume}: not a complete training checkpoint (it lacks {STATE_JSON} or the weights)")
        return os.path.dirname(path), path
    return path, None


def resume_candidates(run_dir: str, chosen: str | None, model_section: Mapping[str, Any], max_steps: int, text: bool) -> list[str]:
    """The checkpoints to resume from, newest first: ``chosen`` alone, else every complete one
    in ``run_dir`` whose config (and tokenizer, for ``text``) reads, unreadable ones skipped
    with a warning. A FoundryError when none is left, when the newest was trained with another
    model section, or when it has already reached ``max_steps`` (the run is finished)."""
    found = [chosen] if chosen else [path for _, path in reversed(list_checkpoints(run_dir))]
    if not found:
        raise FoundryError(_nothing_to_resume(run_dir))
    readable, skipped = [], []
    for path in found:
        try:
            saved = _read_config(path)
            if text:
                from model_foundry.factory import load_tokenizer

                load_tokenizer(path)  # a damaged tokenizer.json is a FoundryError
        except UNREADABLE as error:
            skipped.append((path, error))
            continue
        readable.append((path, saved))
    if not readable:
        raise _unreadable(skipped)
    _warn_skipped(skipped)
    newest, saved = readable[0]
    _check_same_model(newest, saved.get("model"), model_section)
    step = int(CHECKPOINT_PATTERN.match(os.path.basename(newest)).group(1))
    if step >= max_steps:
        final = os.path.join(run_dir, FINAL_DIR)
        trained = f"its model is in {final}" if is_checkpoint(final) else f"its model is in {newest}"
        raise FoundryError(
            f"the run in {run_dir!r} is finished: {os.path.basename(newest)} reached training.max_steps ({max_steps}); "
            f"{trained}. Nothing was changed. To train further, raise training.max_steps "
            "(--set training.max_steps=N --resume); to start again, --overwrite"
        )
    return [path for path, _ in readable]


def _read_config(path: str) -> dict[str, Any]:
    saved = read_yaml_plain(os.path.join(path, CONFIG_FILE))
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise ValueError(f"{CONFIG_FILE} has no model section")
    return saved


def _unreadable(skipped: list[tuple[str, BaseException]]) -> FoundryError:
    return FoundryError(
        f"cannot resume: no readable training checkpoint in {os.path.dirname(skipped[0][0])!r}\n  "
        + "\n  ".join(_reasons(skipped)) + "\nstart again with --overwrite (or set another training.output_dir)"
    )


def _warn_skipped(skipped: list[tuple[str, BaseException]]) -> None:
    for reason in _reasons(skipped):
        _warn(f"skipping unreadable checkpoint {reason}")


def _reasons(skipped: list[tuple[str, BaseException]]) -> list[str]:
    return [f"{os.path.basename(path)}: {_describe(error)}" for path, error in skipped]


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


def _check_same_model(checkpoint: str, saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """A FoundryError naming the model fields that differ. A field left null in the config is
    filled in when the run starts (the vocabulary size from the tokenizer), so it is not compared."""
    before, now = _flatten(saved), _flatten(current)
    differ = [
        f"model.{key}: {before.get(key, '(absent)')!r} there, {now.get(key, '(absent)')!r} now"
        for key in sorted(before.keys() | now.keys())
        if now.get(key) is not None and before.get(key) != now.get(key)
    ]
    if differ:
        shown = differ[:8] + ([f"... and {len(differ) - 8} more"] if len(differ) > 8 else [])
        raise FoundryError(
            f"cannot resume from {checkpoint}: it was trained with another model\n  " + "\n  ".join(shown)
            + "\nresume with the model it was trained with, or start a new run (--overwrite, or another training.output_dir)"
        )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, Mapping):
        return {prefix: data} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return flat


def restore(
    candidates: list[str], model: torch.nn.Module, optimizers: Mapping[str, torch.optim.Optimizer]
) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Load the weights of the first of ``candidates`` whose weights and training state read and
    fit ``model`` and ``optimizers``: ``(checkpoint, state, optimizer states, rng per process)``.

    Unreadable ones are skipped with a warning; none readable is a FoundryError.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    skipped = []
    for path in candidates:
        try:
            load_model(model, os.path.join(path, WEIGHTS_FILE))
            state, optimizer_states, rng_states = read_training_state(path)
            _check_state(path, state, optimizer_states, rng_states, optimizers)
        except (*UNREADABLE, SafetensorError, json.JSONDecodeError) as error:
            skipped.append((path, error))
            continue
        _warn_skipped(skipped)
        return path, state, optimizer_states, rng_states
    raise _unreadable(skipped)


def _check_state(
    path: str, state: Mapping[str, Any], optimizer_states: Mapping[str, Mapping[str, Any]],
    rng_states: list[Any], optimizers: Mapping[str, torch.optim.Optimizer],
) -> None:
    """A ValueError unless the training state fits: its step is the directory's, it holds this
    model's optimizers and their schedulers, and every moment has its parameter's shape."""
    if state.get("step") != int(CHECKPOINT_PATTERN.match(os.path.basename(path)).group(1)):
        raise ValueError(f"{STATE_JSON} says step {state.get('step')!r}")
    if set(optimizer_states) != set(optimizers) or set(state.get("schedulers", {})) != set(optimizers):
        raise ValueError(f"it holds optimizers {', '.join(optimizer_states)}; this model has {', '.join(optimizers)}")
    if not rng_states:
        raise ValueError("it holds no random state")
    for name, optimizer in optimizers.items():
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        groups = optimizer_states[name]["param_groups"]
        if [len(group["params"]) for group in groups] != [len(group["params"]) for group in optimizer.param_groups]:
            raise ValueError(f"optimizer {name!r} has other parameter groups")
        for index, entries in optimizer_states[name]["state"].items():
            for field, value in entries.items():
                if torch.is_tensor(value) and value.dim() and value.shape != parameters[int(index)].shape:
                    raise ValueError(
                        f"optimizer {name!r}: {field} of parameter {index} has shape {tuple(value.shape)}, "
                        f"the parameter {tuple(parameters[int(index)].shape)}"
                    )


# --- a loss that is no longer a number ---------------------------------------------------------


class LossWatch:
    """Remembers the first optimizer step whose loss was not finite; :meth:`check` raises before
    anything is logged or saved after it.

    A step only keeps a reference to its losses (no tensor operation, no synchronisation: on a
    small model a few tensor operations per step are measurable overhead); :meth:`check`, called
    at each log, evaluation and checkpoint, inspects the steps since the last check at once.
    """

    def __init__(
        self, output_dir: str, learning_rate: float, gather: Callable[[torch.Tensor], torch.Tensor] | None, device: Any
    ):
        """``gather`` collects a tensor from every process (``None``: this is the only process)."""
        self.output_dir, self.learning_rate, self._gather, self._device = output_dir, learning_rate, gather, device
        self._pending: list[tuple[int, Mapping[str, torch.Tensor]]] = []
        self._first = 0  # 0: every loss so far was finite on this process

    def observe(self, step: int, losses: Mapping[str, torch.Tensor]) -> None:
        self._pending.append((step, losses))

    def _first_non_finite(self) -> int:
        if not self._first and self._pending:
            values = [value for _, losses in self._pending for value in losses.values()]
            if values:
                # Scalars (the usual losses) are stacked at once: a reshape each cost more than the check.
                scalars = all(value.dim() == 0 for value in values)
                bad = ~(torch.stack(values) if scalars else torch.cat([value.reshape(-1) for value in values])).isfinite()
                if bool(bad.any()):
                    steps = [step for step, losses in self._pending for value in losses.values()
                             for _ in range(value.numel())]
                    self._first = steps[int(bad.nonzero()[0, 0])]
        self._pending.clear()
        return self._first

    def check(self) -> None:
        """A FoundryError naming the step, on every process, when any process saw a non-finite loss."""
        first = self._first_non_finite()
        if self._gather is None:
            firsts = [first] if first else []
        else:
            gathered = self._gather(torch.tensor([first], dtype=torch.long, device=self._device))
            firsts = [int(step) for step in gathered.tolist() if step]
        if not firsts:
            return
        found = list_checkpoints(self.output_dir)
        kept = f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was written"
        raise FoundryError(
            f"the training loss is not a finite number since step {min(firsts)}: training stopped, nothing more saved "
            f"and no final/ written; {kept}. Lower training.learning_rate (now {self.learning_rate:g}) or check the data, "
            "then train again with --overwrite"
        )
