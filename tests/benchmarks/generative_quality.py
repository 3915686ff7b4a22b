"""Quality runs of the generative families: train each on embedded data, measure it, write the table.

    python tests/benchmarks/generative_quality.py                 # every run of every installed family
    python tests/benchmarks/generative_quality.py vae Diffusion   # chosen runs, or whole families
    python tests/benchmarks/generative_quality.py --list          # what there is

Each plugin keeps its runs in ``plugins/<plugin>/tests/benchmarks/quality.py``: a ``FAMILY`` (the
heading of its table) and ``RUNS``, a dict from run name to ``measure(bench) -> row`` (column name ->
value). A measure function trains with ``bench.train`` (``foundry train`` in a subprocess, one thread)
and measures with ``bench.evaluate`` / ``bench.sample_picture``, or in Python on ``bench.load``'s
checkpoint and data. Results are merged into
``docs/benchmarks/generative.json`` (a rerun replaces only its own rows) and the page
``docs/generative-benchmarks.md`` is written again from all of them. Runs take minutes each: this
script is not part of ``make bench`` or the test suite (``make quality`` runs it).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULTS = DOCS / "benchmarks" / "generative.json"
MEDIA = DOCS / "benchmarks" / "generative"
PAGE = DOCS / "generative-benchmarks.md"
RUNS_DIR = ROOT / "runs" / "quality"
FOUNDRY = str(Path(sys.executable).with_name("foundry"))
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class Family:
    name: str
    plugin: str
    runs: dict[str, Callable[[Bench], dict[str, Any]]]


@dataclass(frozen=True)
class TrainedRun:
    name: str
    run_dir: Path
    checkpoint: Path
    cpu_minutes: float  # CPU time of the training process: fair on a machine that other work shares
    wall_minutes: float
    parameters: int


def discover() -> list[Family]:
    """Every ``plugins/*/tests/benchmarks/quality.py``, loaded from its file."""
    families = []
    for path in sorted(ROOT.glob("plugins/*/tests/benchmarks/quality.py")):
        plugin = path.parents[2].name
        spec = importlib.util.spec_from_file_location(f"quality_{plugin.replace('-', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        families.append(Family(module.FAMILY, plugin, dict(module.RUNS)))
    return families


def _foundry(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    command = [FOUNDRY, *args]
    result = subprocess.run(command, cwd=ROOT, env=ENVIRONMENT, text=True,
                            stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        raise RuntimeError(f"`foundry {' '.join(args)}` exited with {result.returncode}")
    return result


class Bench:
    """What a measure function gets: training, evaluation and sampling through the CLI, and files for the page."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def train(self, config: str, *overrides: str, name: str | None = None) -> TrainedRun:
        """``foundry train CONFIG --overwrite`` into ``runs/quality/NAME`` (NAME: the run's name), one thread."""
        name = name or self.run_name
        run_dir = RUNS_DIR / name
        sets = [item for override in (f"training.output_dir={run_dir}", *overrides) for item in ("--set", override)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        print(f"[{name}] foundry train {config} {' '.join(overrides)}", flush=True)
        _foundry("train", str(ROOT / config), "--overwrite", *sets)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        checkpoint = run_dir / "final"
        info = json.loads((checkpoint / "foundry.json").read_text())
        return TrainedRun(name, run_dir, checkpoint, cpu / 60, wall / 60, int(info["num_parameters"]))

    def evaluate(self, run: TrainedRun, *args: str) -> dict[str, Any]:
        """``foundry eval CHECKPOINT --json`` (extra ARGS such as ``--num-samples 1000``): the metrics as a dict."""
        return json.loads(_foundry("eval", str(run.checkpoint), "--json", *args, capture=True).stdout)

    def sample_picture(self, run: TrainedRun, stem: str, *, num_samples: int = 64, seed: int = 0,
                       condition: int | None = None) -> str:
        """``foundry sample`` into the page's media folder; markdown showing what was written (images
        inline, other files such as WAV as links; the raw ``.npy`` is not kept)."""
        MEDIA.mkdir(parents=True, exist_ok=True)
        args = ["sample", str(run.checkpoint), "--num-samples", str(num_samples), "--seed", str(seed),
                "--out", str(MEDIA / stem), "--json"]
        if condition is not None:
            args += ["--condition", str(condition)]
        written = json.loads(_foundry(*args, capture=True).stdout)["files"]
        links = []
        for file in map(Path, written):
            if file.suffix == ".npy":
                file.unlink(missing_ok=True)
            else:
                links.append(self.link(file))
        return " ".join(links)

    def data(self, config_file: str | Path, model_config: Any = None) -> Any:
        """The data of a config's run (``load_data``'s splits), from that run's cache as ``foundry train`` left it."""
        from model_foundry.config import load_config
        from model_foundry.datasets import DataContext, load_data
        from model_foundry.training.rundir import data_cache_dir

        config = load_config(config_file, sections=("data", "training"))
        cache = data_cache_dir(config.data, os.path.abspath(config.training.output_dir))
        return load_data(config.data, DataContext(cache, config.training.seed, None, model_config))

    def load(self, checkpoint: Path) -> tuple[Any, Any]:
        """A checkpoint opened as ``foundry eval`` opens it (``.model``, in eval mode; ``.config_file``;
        what ``sampling_weights_of`` takes) and its run's data."""
        from model_foundry.commands._checkpoint import open_checkpoint

        opened = open_checkpoint(str(checkpoint))
        opened.model.eval()
        return opened, self.data(opened.config_file, opened.model.config)

    def media(self, filename: str) -> Path:
        """A path in the page's media folder, for files a measure function writes itself (heat maps, ...)."""
        MEDIA.mkdir(parents=True, exist_ok=True)
        return MEDIA / filename

    def link(self, path: Path) -> str:
        """Markdown for a file in the media folder: an image shown inline, anything else linked."""
        relative = Path(path).resolve().relative_to(DOCS)
        if relative.suffix.lower() in (".png", ".jpg", ".svg", ".gif"):
            return f"![{relative.stem}]({relative.as_posix()})"
        return f"[{relative.name}]({relative.as_posix()})"


def _format(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_page(results: dict[str, Any], families: list[Family]) -> None:
    order = [family.name for family in families]
    by_family: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, record in results.items():
        by_family.setdefault(record["family"], []).append((name, record))
    lines = [
        "# Generative families: quality runs",
        "",
        "Each row trains one `configs/` file on embedded data (digits, toy sets, synthetic audio) with",
        "`foundry train` on one CPU thread and measures the result; **CPU minutes** is the training",
        "process's CPU time, which stays fair when other work shares the machine. Rerun any of it:",
        "",
        "```",
        "python tests/benchmarks/generative_quality.py            # everything (hours)",
        "python tests/benchmarks/generative_quality.py vae ddpm   # chosen runs or families",
        "```",
        "",
        "Digits scores use the core's digits classifier (`docs/metrics.md`): the class-probability score",
        "(held-out real digits about 8.4, one fitted Gaussian about 4.4) and the Fréchet distance of its",
        "features against the validation split (lower is better).",
        "",
    ]
    for family in sorted(by_family, key=lambda f: order.index(f) if f in order else len(order)):
        rows = by_family[family]
        columns: list[str] = []
        for _, record in rows:
            columns += [column for column in record["row"] if column not in columns]
        lines += [f"## {family}", "", "| run | " + " | ".join(columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for name, record in rows:
            cells = [_format(record["row"].get(column, "")) for column in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        measured = sorted({f"{record['measured_at']} on {record['machine']}" for _, record in rows})
        lines += ["", "Measured " + "; ".join(measured) + ".", ""]
    PAGE.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("select", nargs="*", help="run names or family names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the families and runs, and stop")
    args = parser.parse_args(argv)
    families = discover()
    if args.list:
        for family in families:
            print(f"{family.name} ({family.plugin}): {', '.join(family.runs)}")
        return 0
    wanted = {item.lower() for item in args.select}
    chosen = [(family, name, measure) for family in families for name, measure in family.runs.items()
              if not wanted or name.lower() in wanted or family.name.lower() in wanted
              or family.plugin.lower() in wanted]
    known = {name.lower() for family in families for name in family.runs} | \
        {family.name.lower() for family in families} | {family.plugin.lower() for family in families}
    if wanted - known:
        parser.error(f"unknown runs or families: {', '.join(sorted(wanted - known))} (see --list)")
    failed = []
    for family, name, measure in chosen:
        print(f"== {family.name}: {name}", flush=True)
        try:
            row = measure(Bench(name))
        except Exception as error:  # one failed run must not cost the others their results
            print(f"[{name}] FAILED: {type(error).__name__}: {error}", flush=True)
            failed.append(name)
            continue
        # Other runs (other plugins' sessions) may have written rows since this one started: merge into the file's.
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results[name] = {
            "family": family.name, "row": row,
            "measured_at": datetime.date.today().isoformat(),
            "machine": f"{_processor()}, torch {_torch_version()}, 1 thread",
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        write_page(results, families)
        print(f"[{name}] " + ", ".join(f"{key}={_format(value)}" for key, value in row.items()
                                       if not str(value).startswith(("![", "["))), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


if __name__ == "__main__":
    sys.exit(main())
