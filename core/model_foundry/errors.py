"""User errors: where they are and what is wrong, all of them at once."""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

import attrs


@attrs.frozen
class Location:
    """A place in a config: a file (or ``--set ...``, or a preset) with 1-based line and column."""

    file: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@attrs.frozen
class Problem:
    """One thing wrong with a config, rendered as ``FILE:LINE:COL: key.path: message``."""

    message: str
    path: str = ""
    location: Location | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        what = f"{self.path}: " if self.path else ""
        return f"{where}{what}{self.message}"


class FoundryWarning(UserWarning):
    """Something the user should know that stops nothing; the CLI prints it as ``warning: ...``."""


class FoundryError(Exception):
    """Base of the errors a user can fix; the CLI prints them and exits with code 2."""


class ConfigError(FoundryError):
    """Everything wrong with a config, found in one pass."""

    def __init__(self, problems: Sequence[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        # In file order (problems without a place first), however the checks that found them ran.
        self.problems: list[Problem] = sorted(problems, key=lambda p: (p.location is not None, _place(p.location)))
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        lines = [str(p) for p in self.problems]
        if count > 1:
            lines.append(f"{count} problems found.")
        return "\n".join(lines)


def _place(location: Location | None) -> tuple[str, int, int]:
    return (location.file, location.line, location.column) if location is not None else ("", 0, 0)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)``, or nothing when no choice is close."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    if str(word).lower() in lowered:
        return f"; did you mean {lowered[str(word).lower()]!r}?"
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(choices: Iterable[str]) -> str:
    choices = sorted(str(c) for c in choices)
    return ", ".join(choices) if choices else "(none installed)"
