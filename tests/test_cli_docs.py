"""The docs show what the commands do: docs/cli.md names every option of every command, as ``foundry
COMMAND --help`` shows them; the error example in docs/configs.md is what ``foundry validate`` prints."""

from __future__ import annotations

import os
import re

from model_foundry.cli import build_parser

CLI_DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "cli.md")


def commands() -> dict:
    """``{name: its argparse parser}`` for every ``foundry`` command."""
    (subparsers,) = [action for action in build_parser()._actions if action.choices]
    return dict(subparsers.choices)


def documented_usage() -> dict[str, str]:
    """The usage cell of each ``| `foundry NAME ...` |`` row of the command table in docs/cli.md."""
    with open(CLI_DOCS, encoding="utf-8") as handle:
        rows = re.findall(r"^\| `foundry ([a-z-]+)([^`]*)` \|", handle.read(), flags=re.MULTILINE)
    return {name: usage for name, usage in rows}


def test_the_command_table_shows_every_option_of_every_command():
    usages = documented_usage()
    assert set(usages) == set(commands())
    for name, parser in commands().items():
        options = {max(action.option_strings, key=len) for action in parser._actions if action.option_strings}
        missing = sorted(option for option in options - {"--help"} if not re.search(rf"{option}\b", usages[name]))
        assert not missing, f"docs/cli.md: `foundry {name}` lacks {', '.join(missing)}"


EXP_YAML = """\
model:
  architecture: gpt2
  preset: tiny
  transformer:
    layrs: 4
    hidden_size: 128
    activation_function: gelu_neww
training:
  max_steps: 100
"""


def test_the_error_example_in_configs_md_is_what_validate_prints(tmp_path, capsys, monkeypatch):
    from model_foundry.cli import main

    with open(os.path.join(os.path.dirname(CLI_DOCS), "configs.md"), encoding="utf-8") as handle:
        (example,) = re.findall(r"```console\n\$ (foundry validate exp\.yaml .*)\n((?:.+\n)+?)```", handle.read())
    command, shown = example
    (tmp_path / "exp.yaml").write_text(EXP_YAML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(command.split()[1:]) == 2
    assert capsys.readouterr().err == shown
