"""``foundry new-plugin NAME [--dir DIR]``: write a working, tested plugin distribution to start from."""

from __future__ import annotations

import os
import re
import textwrap

from model_foundry.checkpoint import atomic_directory
from model_foundry.errors import FoundryError

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "foundry-plugin-{name}"
version = "0.1.0"
description = "The {name} architecture for Model Foundry"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["model-foundry>=0.1", "torch>=2.2"]

[project.entry-points.model_foundry]
{name} = "{package}.plugin"

[tool.setuptools]
packages = ["{package}"]
'''

PLUGIN = '''\
"""Hook implementations only: no torch here, so that `foundry list` stays fast."""

from model_foundry import hookimpl
from model_foundry.specs import ArchitectureSchema, Capabilities, ModelBuilder

from {package}.config import PRESETS, {cls}Config


@hookimpl
def foundry_config_schemas():
    return [
        ArchitectureSchema(
            name="{name}",
            config_class={cls}Config,
            family="recurrent",
            description="A one-layer GRU language model (edit me)",
            presets=PRESETS,
            capabilities=Capabilities(objectives=("causal_lm",), supports_generation=True),
        )
    ]


@hookimpl
def foundry_model_builders():
    return [ModelBuilder("{name}", "{package}.model:build")]
'''

CONFIG = '''\
"""The {name} config: attrs fields with docs and validators, and its presets."""

from typing import Optional

import attrs

from model_foundry.schema import option, positive, probability


@attrs.frozen
class {cls}Config:
    """The model section of a {name} config."""

    hidden_size: int = option(64, doc="width of the embeddings and the recurrent state", validator=positive)
    dropout: float = option(0.0, doc="dropout on the recurrent outputs", validator=probability)
    vocab_size: Optional[int] = option(None, doc="vocabulary size (filled from the tokenizer when null)", validator=positive)


PRESETS = {{
    "tiny": {{"hidden_size": 32}},
    "small": {{"hidden_size": 256, "dropout": 0.1}},
}}
'''

MODEL = '''\
"""The {name} model, readable top to bottom."""

import torch
from torch import nn

from model_foundry.text.modeling import LanguageModel, ModelOutput, causal_lm_loss, with_vocab_size


class {cls}Model(LanguageModel):
    supports_generation = True
    max_sequence_length = None

    def __init__(self, config):
        super().__init__(config)
        params = config.params
        self.embed = nn.Embedding(params.vocab_size, params.hidden_size)
        self.rnn = nn.GRU(params.hidden_size, params.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(params.dropout)
        self.head = nn.Linear(params.hidden_size, params.vocab_size)

    def forward(self, input_ids, attention_mask=None, labels=None, state=None, **kwargs):
        hidden, state = self.rnn(self.embed(input_ids), state)
        logits = self.head(self.dropout(hidden))
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, state=state)

    def next_token_logits(self, input_ids, state=None):
        output = self(input_ids=input_ids, state=state)
        return output.logits[:, -1, :], output.state

    def get_input_embeddings(self):
        return self.embed

    def resize_token_embeddings(self, new_num_tokens):
        old = self.embed
        self.embed = nn.Embedding(new_num_tokens, old.embedding_dim)
        keep = min(new_num_tokens, old.num_embeddings)
        with torch.no_grad():
            self.embed.weight[:keep] = old.weight[:keep]
        self.head = nn.Linear(old.embedding_dim, new_num_tokens)
        self.config = self.config.evolve(vocab_size=new_num_tokens)
        return self.embed


def build(config):
    return {cls}Model(with_vocab_size(config))
'''

TEST = '''\
from model_foundry.testing import check_architecture


def test_{package}_conforms():
    check_architecture("{name}")
'''

GITIGNORE = '''\
build/
dist/
*.egg-info/
__pycache__/
'''

README = '''\
# foundry-plugin-{name}

The `{name}` architecture for [Model Foundry](https://pypi.org/project/model-foundry/).

```sh
pip install -e .          # then: foundry list, foundry info {name}
pytest tests              # the core's conformance checks
```

Files: `{package}/plugin.py` (hooks only), `config.py` (fields and presets),
`model.py` (the model and its builder).
'''


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("new-plugin", help="create a new plugin distribution from a template",
                                   description=__doc__)
    parser.add_argument("name", help="architecture name, e.g. mygru (letters, digits, underscores)")
    parser.add_argument("--dir", default=".", help="where to create foundry-plugin-NAME/ (default: here)")
    parser.set_defaults(run=run)


def render(name: str) -> dict[str, str]:
    """The template's files, relative path -> text."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise FoundryError(f"plugin name {name!r} must be lowercase letters, digits and underscores, starting with a letter")
    package = f"foundry_plugin_{name}"
    values = {"name": name, "package": package, "cls": "".join(p.capitalize() for p in name.split("_"))}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        ".gitignore": GITIGNORE,
        f"{package}/__init__.py": '"""The {name} plugin for Model Foundry."""\n',
        f"{package}/plugin.py": PLUGIN,
        f"{package}/config.py": CONFIG,
        f"{package}/model.py": MODEL,
        f"tests/test_{name}.py": TEST,
    }
    return {path: textwrap.dedent(text).format(**values) for path, text in files.items()}


def check_name_is_free(name: str) -> None:
    """Refuse a name an installed plugin already provides: installing the scaffold (``pip install -e``)
    would replace that plugin's distribution or clash with its architecture."""
    from importlib import metadata

    from model_foundry.plugins import get_registry

    distribution = f"foundry-plugin-{name}"
    try:
        owner: str | None = f"{distribution} {metadata.version(distribution)} is installed"
    except metadata.PackageNotFoundError:
        owner = None
    entries = get_registry().architectures.get(name)
    if entries:
        owner = f"architecture {name!r} is provided by {entries[0].plugin.distribution} {entries[0].plugin.version}"
    if owner:
        raise FoundryError(f"{owner}; a new plugin of that name would replace or clash with it: choose another name")


def run(args) -> int:
    target = os.path.join(args.dir, f"foundry-plugin-{args.name}")
    files = render(args.name)
    check_name_is_free(args.name)
    if os.path.exists(target):
        raise FoundryError(f"{target!r} already exists; choose another name or --dir")
    with atomic_directory(target) as staging:
        for relative, text in files.items():
            path = os.path.join(staging, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
    print(f"created {target}/")
    print(f"next: pip install -e {target} && foundry info {args.name} && pytest {target}/tests")
    return 0
