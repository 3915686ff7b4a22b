"""Config checks of the recurrent architectures: presets, cell agreement, objectives by direction."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_foundry.config import load_config, load_model_config
from model_foundry.errors import ConfigError
from model_foundry.factory import create_model

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def foundry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_foundry.cli", *args], check=False, capture_output=True, text=True, timeout=120, cwd=REPO
    )


@pytest.mark.parametrize("architecture", ["lstm", "gru", "rnn"])
def test_rnn_type_defaults_to_the_architecture_and_may_repeat_it(architecture: str) -> None:
    default = load_model_config({"architecture": architecture, "preset": "tiny", "vocab_size": 10})
    assert default.rnn.rnn_type is None
    explicit = load_model_config(
        {"architecture": architecture, "preset": "tiny", "vocab_size": 10, "rnn": {"rnn_type": architecture}}
    )
    assert type(create_model(explicit).recurrent).__name__ == architecture.upper()


def test_rnn_type_that_contradicts_the_architecture_is_a_located_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        model:
          architecture: lstm
          rnn:
            hidden_size: 64
            rnn_type: gru
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.path == "model.rnn.rnn_type"
    assert (problem.location.line, problem.location.column) == (5, 15)
    assert "contradicts architecture 'lstm'" in problem.message and "architecture: gru" in problem.message


def test_nonlinearity_belongs_to_the_rnn_architecture_only(tmp_path: Path) -> None:
    relu = load_model_config({"architecture": "rnn", "preset": "tiny", "vocab_size": 10, "rnn": {"nonlinearity": "relu"}})
    assert create_model(relu).recurrent.nonlinearity == "relu"
    path = write(tmp_path, "model:\n  architecture: gru\n  rnn:\n    nonlinearity: relu\n")
    with pytest.raises(ConfigError, match=r"config.yaml:4:5: model.rnn.nonlinearity: unknown key 'nonlinearity'"):
        load_config(path)


@pytest.mark.parametrize(
    ("bidirectional", "objective", "accepted"),
    [(False, "causal_lm", True), (True, "masked_lm", True), (False, "masked_lm", False)],
)
def test_objective_follows_direction(tmp_path: Path, bidirectional: bool, objective: str, accepted: bool) -> None:
    path = write(
        tmp_path,
        f"""
        model:
          architecture: gru
          preset: tiny
          rnn:
            bidirectional: {str(bidirectional).lower()}
        training:
          objective: {objective}
        """,
    )
    if accepted:
        assert load_config(path).training.objective == objective
    else:
        with pytest.raises(ConfigError, match="training.objective: gru cannot train 'masked_lm'"):
            load_config(path)


def test_foundry_validate_rejects_a_bidirectional_causal_model_with_a_location(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        model:
          architecture: lstm
          preset: tiny
          rnn:
            bidirectional: true
        training:
          objective: causal_lm
        """,
        name="bilstm.yaml",
    )
    result = foundry("validate", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(
        r"bilstm\.yaml:7:14: training\.objective: lstm cannot train 'causal_lm' with these settings, only masked_lm", result.stderr
    ), result.stderr


@pytest.mark.parametrize("name", ["lstm-small.yaml", "bilstm-mlm.yaml"])
def test_example_configs_validate(name: str, tmp_path) -> None:
    # validate checks that the data files exist; the examples' Shakespeare files are written by `make quickstart`.
    text = tmp_path / "text.txt"
    text.write_text("Some text to train on.\n", encoding="utf-8")
    files = [f"--set=data.{key}=[{text}]" for key in ("train_files", "validation_files")]
    result = foundry("validate", f"configs/{name}", *files)
    assert result.returncode == 0, result.stderr
