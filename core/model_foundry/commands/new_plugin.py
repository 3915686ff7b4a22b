"""``foundry new-plugin NAME [--dir DIR] [--modality text|image]``: write a working, tested plugin
distribution to start from: a GRU language model, or a small VAE of images that trains on the digits."""

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
dependencies = ["{core_requirement}", "torch>=2.2"]

[project.entry-points.model_foundry]
{name} = "{package}.plugin"

[tool.setuptools]
packages = ["{package}"]
'''

PLUGIN = '''\
"""Hook implementations only: no torch here, so that `foundry list` stays fast."""

from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl

from {package}.config import PRESETS, {cls}Config


@hookimpl
def foundry_config_schemas():
    return [
        ArchitectureSchema(
            name="{name}",
            config_class={cls}Config,
            family="{family}",
            description="{description}",
            presets=PRESETS,
            capabilities=Capabilities({capabilities}),
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

from model_foundry.plugin import Presets, option, positive, probability


@attrs.frozen
class {cls}Config:
    """The model section of a {name} config."""

    hidden_size: int = option(64, doc="width of the embeddings and the recurrent state", validator=positive)
    dropout: float = option(0.0, doc="dropout on the recurrent outputs", validator=probability)
    vocab_size: Optional[int] = option(None, doc="vocabulary size (filled from the tokenizer when null)", validator=positive)


# A preset is a function returning a config object: a misspelled field fails in the tests.
PRESETS = Presets()


@PRESETS.register("tiny")
def tiny() -> {cls}Config:
    return {cls}Config(hidden_size=32)


@PRESETS.register("small")
def small() -> {cls}Config:
    return attrs.evolve(tiny(), hidden_size=256, dropout=0.1)
'''

MODEL = '''\
"""The {name} model, readable top to bottom."""

from torch import nn

from model_foundry.plugin import LanguageModel, ModelOutput, causal_lm_loss, with_vocab_size


class {cls}Model(LanguageModel):
    max_sequence_length = None
    vocabulary_layers = ("embed", "head")  # resize_token_embeddings keeps their rows

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

    @property
    def supports_generation(self):
        return True

    def get_input_embeddings(self):
        return self.embed


def build(config):
    return {cls}Model(with_vocab_size(config))
'''

IMAGE_CONFIG = '''\
"""The {name} config: attrs fields with docs and validators, and its presets."""

import attrs

from model_foundry.plugin import Presets, option, positive


@attrs.frozen
class {cls}Config:
    """The model section of a {name} config."""

    image_shape: tuple[int, ...] = option((1, 8, 8), doc="one image: [channels, height, width]")
    latent_dim: int = option(8, doc="size of the latent code", validator=positive)
    hidden_size: int = option(128, doc="width of the encoder's and decoder's hidden layer", validator=positive)

    def validate(self):
        if len(self.image_shape) != 3 or any(size < 1 for size in self.image_shape):
            yield "image_shape", f"must be [channels, height, width], each >= 1, got {{list(self.image_shape)}}"


# A preset is a function returning a config object: a misspelled field fails in the tests.
PRESETS = Presets()


@PRESETS.register("tiny")
def tiny() -> {cls}Config:
    return {cls}Config(latent_dim=2, hidden_size=16)


@PRESETS.register("small")
def small() -> {cls}Config:
    return attrs.evolve(tiny(), latent_dim=8, hidden_size=128)
'''

IMAGE_MODEL = '''\
"""The {name} model, readable top to bottom: a variational autoencoder of images in [-1, 1].

The encoder gives a Gaussian q(z|x); the decoder a Gaussian p(x|z) with one learned scale. The
loss is the negative evidence lower bound (ELBO) in nats per image, the sum of the named terms
``reconstruction_loss`` and ``kl_loss``, which training logs apart.
"""

import math

import torch
from torch import nn

from model_foundry.plugin import FoundryError, FoundryModel, ModelOutput


class {cls}Model(FoundryModel):
    def __init__(self, config):
        super().__init__(config)
        params = config.params
        self.image_shape = tuple(params.image_shape)
        pixels = math.prod(self.image_shape)
        self.latent_dim = params.latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, params.hidden_size), nn.SiLU(),
                                     nn.Linear(params.hidden_size, 2 * params.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(params.latent_dim, params.hidden_size), nn.SiLU(),
                                     nn.Linear(params.hidden_size, pixels))
        self.log_scale = nn.Parameter(torch.zeros(()))

    def posterior(self, pixel_values):
        """The mean and log-variance of the Gaussian q(z|x)."""
        mean, log_var = self.encoder(pixel_values).chunk(2, dim=-1)
        return mean, log_var

    def encode(self, pixel_values, **batch):
        """One latent per image: the posterior mean."""
        return self.posterior(pixel_values)[0]

    def decode(self, latents):
        return self.decoder(latents).view(-1, *self.image_shape)

    def elbo_terms(self, pixel_values):
        """Per image, in nats: log p(x|z) for one z drawn from q(z|x), and KL(q(z|x) || N(0, I))."""
        mean, log_var = self.posterior(pixel_values)
        latents = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        reconstruction = self.decode(latents)
        log_likelihood = torch.distributions.Normal(reconstruction, self.log_scale.exp()).log_prob(pixel_values)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1)
        return log_likelihood.flatten(1).sum(1), kl

    def forward(self, pixel_values, **batch):
        log_likelihood, kl = self.elbo_terms(pixel_values)
        reconstruction_loss, kl_loss = -log_likelihood.mean(), kl.mean()
        return ModelOutput(loss=reconstruction_loss + kl_loss, reconstruction_loss=reconstruction_loss, kl_loss=kl_loss)

    def log_prob(self, pixel_values, **batch):
        """A lower bound of log p(x) per image (the ELBO): the capabilities say likelihood="bound"."""
        log_likelihood, kl = self.elbo_terms(pixel_values)
        return log_likelihood - kl

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, conditions=None):
        if conditions is not None:
            raise FoundryError(f"{{self.architecture}} is unconditional; sample without conditions")
        device = generator.device if generator is not None else self.log_scale.device
        latents = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return self.decode(latents.to(self.log_scale.device)).clamp(-1, 1)


def build(config):
    return {cls}Model(config)
'''

IMAGE_TEST = '''\
import os
import subprocess
import sys
from pathlib import Path

from model_foundry.plugin import check_architecture

ROOT = Path(__file__).resolve().parents[1]


def test_{package}_conforms():
    check_architecture("{name}")


def test_trains_on_digits_and_samples(tmp_path):
    """The example config trains (a few steps here) and its checkpoint draws an image grid."""
    env = {{**os.environ, "OMP_NUM_THREADS": "1"}}

    def foundry(*args):
        result = subprocess.run([sys.executable, "-m", "model_foundry.cli", *args], capture_output=True, text=True,
                                env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    foundry("train", str(ROOT / "configs" / "digits.yaml"), "--set", "training.max_steps=20",
            "--set", "training.eval_every=10", "--set", f"training.output_dir={{tmp_path / 'run'}}")
    foundry("sample", str(tmp_path / "run" / "final"), "--num-samples", "16", "--seed", "0",
            "--out", str(tmp_path / "samples"))
    assert (tmp_path / "samples.png").exists()
'''

IMAGE_EXAMPLE = '''\
# Train {name} on scikit-learn's 8x8 digits: foundry train configs/digits.yaml
model:
  architecture: {name}
  preset: small
  image_shape: [1, 8, 8]
data:
  kind: digits
training:
  max_steps: 2000
  batch_size: 64
  learning_rate: 0.002
  warmup_steps: 100
  eval_every: 500
  output_dir: runs/{name}-digits
'''

TEST = '''\
from model_foundry.plugin import check_architecture


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


# What each --modality scaffolds: the architecture's own files, beside the ones every plugin has.
TEMPLATES = {
    "text": {
        "family": "recurrent", "description": "A one-layer GRU language model (edit me)",
        "capabilities": 'objectives=("causal_lm",), supports_generation=True',
        "config.py": CONFIG, "model.py": MODEL, "test": TEST,
    },
    "image": {
        "family": "vae", "description": "A small variational autoencoder of images (edit me)",
        "capabilities": 'modality="image", sampling=True, likelihood="bound", latent=True',
        "config.py": IMAGE_CONFIG, "model.py": IMAGE_MODEL, "test": IMAGE_TEST, "configs/digits.yaml": IMAGE_EXAMPLE,
    },
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("new-plugin", help="create a new plugin distribution from a template",
                                   description=__doc__)
    parser.add_argument("name", help="architecture name, e.g. mygru (letters, digits, underscores)")
    parser.add_argument("--dir", default=".", help="where to create foundry-plugin-NAME/ (default: here)")
    parser.add_argument("--modality", choices=sorted(TEMPLATES), default="text",
                        help="text: a GRU language model (default); image: a small VAE that trains on the digits")
    parser.set_defaults(run=run)


def render(name: str, modality: str = "text") -> dict[str, str]:
    """The template's files, relative path -> text."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise FoundryError(f"plugin name {name!r} must be lowercase letters, digits and underscores, starting with a letter")
    package = f"foundry_plugin_{name}"
    template = TEMPLATES[modality]
    values = {
        "name": name, "package": package, "cls": "".join(p.capitalize() for p in name.split("_")),
        # The digits data kind reads scikit-learn's copy: the core's `images` extra.
        "core_requirement": "model-foundry[images]>=0.1" if modality == "image" else "model-foundry>=0.1",
        **{key: template[key] for key in ("family", "description", "capabilities")},
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        ".gitignore": GITIGNORE,
        f"{package}/__init__.py": '"""The {name} plugin for Model Foundry."""\n',
        f"{package}/plugin.py": PLUGIN,
        f"{package}/config.py": template["config.py"],
        f"{package}/model.py": template["model.py"],
        f"tests/test_{name}.py": template["test"],
        **{path: text for path, text in template.items() if path.startswith("configs/")},
    }
    return {path: textwrap.dedent(text).format(**values) for path, text in files.items()}


def check_name_is_free(name: str) -> None:
    """Refuse a name an installed plugin already provides: installing the scaffold (``pip install -e``)
    would replace that plugin's distribution or clash with its architecture."""
    from importlib import metadata

    from model_foundry.registry import get_registry

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
    files = render(args.name, args.modality)
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
