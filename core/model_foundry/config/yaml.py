"""Config files as YAML: plain data with the location of every key and value, within limits.

:func:`read_yaml` parses a file into :class:`Located` data (dicts, lists, scalars, and a
``FILE:LINE:COL`` for each key path) with ruamel.yaml, refusing what a config never needs: tags
that name a type, duplicate keys, and files built to exhaust the machine (see "Limits" in
docs/configs.md).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from model_foundry.errors import ConfigError, Location, Problem

# The sections of a config file, in the order they are documented.
SECTIONS = ("model", "tokenizer", "data", "training", "extensions")
Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """``("data", "train_files", 0)`` -> ``"data.train_files[0]"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@attrs.define
class Located:
    """Plain data (dicts, lists, scalars) with the location of every key and value in it."""

    data: Any
    values: dict[Path, Location] = attrs.field(factory=dict)
    keys: dict[Path, Location] = attrs.field(factory=dict)

    def where(self, path: Path, key: bool = False) -> Location | None:
        """The location of ``path`` (its key if ``key``), else of its nearest located parent."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        while path:
            path = path[:-1]
            if path in self.values:
                return self.values[path]
        return None




def key_path(dotted_path: str) -> Path:
    """``"data.train_files[0]"`` -> ``("data", "train_files", 0)``: the inverse of :func:`dotted`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"\.|\[|\]", dotted_path) if part)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


# Bounds that keep a small hostile file from exhausting the machine (docs/configs.md, "Limits").
MAX_NESTING = 100  # ruamel's scanner is superlinear in flow nesting and its composer recursive
MAX_VALUES = 100_000  # keys, values and list items after aliases are expanded ("billion laughs")
MAX_INT_DIGITS = 4300  # Python's own limit for converting a decimal string to int
PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")}
_DECIMAL = re.compile(r"[-+]?[0-9][0-9_]*")


def read_yaml(path: str | os.PathLike[str]) -> Located:
    """Parse a YAML file into plain data with the location of every key and value."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(Problem(f"config file not found: {path!r}; check the path"))
    if os.path.isdir(path):
        raise ConfigError(Problem(f"{path!r} is a directory; expected a YAML config file"))
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        line = text_line_of(path, exc.start)
        raise ConfigError(Problem(f"not UTF-8 text ({exc.reason}); save the file as UTF-8",
                                  location=Location(path, line, 1))) from None
    except OSError as exc:
        raise ConfigError(Problem(f"cannot read {path!r}: {exc.strerror or exc}")) from None
    return parse_yaml(text, path)


def text_line_of(path: str, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _load(text: str, filename: str) -> Any:
    """The YAML document in ``text``, once it is known to stay within the limits above."""
    _check_flow_nesting(text, filename)
    _check_events(_yaml().parse(text), filename)
    return _yaml().load(text)


def _check_flow_nesting(text: str, filename: str) -> None:
    """Refuse deep ``[``/``{`` nesting before the scanner sees it (counted on the raw text, so a
    bracket inside a quoted string counts too: only a file far beyond any real config is refused)."""
    depth = 0
    for match in re.finditer(r"[\[\]{}]", text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_NESTING:
            line = text.count("\n", 0, match.start()) + 1
            column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
            raise ConfigError(Problem(f"more than {MAX_NESTING} nested [ or {{; a config nests a few levels deep",
                                      location=Location(filename, line, column)))


def _check_events(events: Iterable[Any], filename: str) -> None:
    """One pass over the parser's events: no tag that names a type (``!!python/...``), no nesting beyond
    :data:`MAX_NESTING`, no integer beyond :data:`MAX_INT_DIGITS` digits, and at most
    :data:`MAX_VALUES` values once every alias is expanded."""

    def refuse(event: Any, message: str) -> None:
        mark = event.start_mark
        raise ConfigError(Problem(message, location=Location(filename, mark.line + 1, mark.column + 1)))

    sizes: dict[str, int] = {}  # anchor -> values in the anchored node, its own aliases expanded
    open_nodes: list[tuple[str | None, int]] = [(None, 0)]  # (anchor, values so far) of each open collection

    def add(event: Any, count: int) -> None:
        anchor, total = open_nodes[-1]
        total += count
        if total > MAX_VALUES:
            refuse(event, f"this file expands to more than {MAX_VALUES:,} values once its aliases (*name) are "
                   "expanded; a config needs far fewer: write the values out, or use fewer nested aliases")
        open_nodes[-1] = (anchor, total)

    for event in events:
        kind = type(event).__name__
        tag = getattr(event, "tag", None)
        if tag is not None and str(tag) not in PLAIN_TAGS:
            hint = " (nothing in a config is ever executed)" if "python/" in str(tag) else ""
            refuse(event, f"YAML tag {str(tag).replace('tag:yaml.org,2002:', '!!')!r} is not allowed{hint}; "
                   "write the plain value without a tag")
        if kind in ("SequenceStartEvent", "MappingStartEvent"):
            if len(open_nodes) > MAX_NESTING:
                refuse(event, f"more than {MAX_NESTING} nested levels; a config nests a few levels deep")
            open_nodes.append((event.anchor, 1))
        elif kind in ("SequenceEndEvent", "MappingEndEvent"):
            anchor, total = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = total
            add(event, total)
        elif kind == "ScalarEvent":
            value = event.value
            if event.style is None and tag is None and len(value) > MAX_INT_DIGITS and _DECIMAL.fullmatch(value):
                refuse(event, f"an integer of {len(value):,} digits; integers in a config have at most "
                       f"{MAX_INT_DIGITS} digits")
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(event, 1)
        elif kind == "AliasEvent":
            add(event, sizes.get(event.anchor, 1))


def parse_yaml(text: str, filename: str = "<string>") -> Located:
    try:
        root = _load(text, filename)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = _yaml_message(exc, text, mark)
        location = Location(filename, mark.line + 1, mark.column + 1) if mark else Location(filename)
        raise ConfigError(Problem(message, location=location)) from None
    except YAMLError as exc:
        raise ConfigError(Problem(f"invalid YAML: {exc}", location=Location(filename))) from None
    if root is None:
        raise ConfigError(
            Problem(f"the file is empty; expected a mapping with sections {', '.join(SECTIONS)}", location=Location(filename))
        )
    if not isinstance(root, CommentedMap):
        raise ConfigError(
            Problem(
                f"the top level must be a mapping of sections ({', '.join(SECTIONS)}), got {type(root).__name__}",
                location=Location(filename, 1, 1),
            )
        )
    located = Located(None)
    located.values[()] = Location(filename, 1, 1)
    located.data = _plain(root, (), located, filename)
    return located


def _yaml_message(exc: MarkedYAMLError, text: str, mark: Any) -> str:
    if isinstance(exc, DuplicateKeyError):  # marked at the second occurrence of the key
        return f"duplicate key {_key_at(text, mark)!r}; each key may appear once in a mapping"
    problem = (exc.problem or str(exc)).strip()
    if mark is not None and "\t" in (text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""):
        return "tab character in indentation; YAML indents with spaces only"
    context = f" {exc.context}" if exc.context else ""
    return f"invalid YAML: {problem}{context}"


def _key_at(text: str, mark: Any) -> str:
    """The key that starts at ``mark``, as the file writes it."""
    return text.splitlines()[mark.line][mark.column:].split(":", 1)[0].strip().strip("\"'")


def _plain(node: Any, path: Path, located: Located, filename: str) -> Any:
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            try:
                line, col = node.lc.key(key)
                vline, vcol = node.lc.value(key)
            except (KeyError, TypeError):  # a key merged in with `<<:` is located at its mapping
                line, col = vline, vcol = node.lc.line, node.lc.col
            if value is None:  # ruamel places a missing value at the next token; point at the key
                vline, vcol = line, col
            key = str(key) if not isinstance(key, str) else key
            located.keys[path + (key,)] = Location(filename, line + 1, col + 1)
            located.values[path + (key,)] = Location(filename, vline + 1, vcol + 1)
            out[key] = _plain(value, path + (key,), located, filename)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            located.values[path + (index,)] = Location(filename, line + 1, col + 1)
            out_list.append(_plain(value, path + (index,), located, filename))
        return out_list
    if hasattr(node, "__float__") and type(node).__module__.startswith("ruamel"):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    return node


def parse_value(text: str, filename: str) -> Any:
    """A value given on the command line (``--set key=VALUE``), read as YAML into plain data."""
    value = _load(text, filename)
    if isinstance(value, (CommentedMap, CommentedSeq)):
        return _plain(value, (), Located(None), filename)
    if hasattr(value, "__float__") and type(value).__module__.startswith("ruamel"):
        return float(value)
    return value
