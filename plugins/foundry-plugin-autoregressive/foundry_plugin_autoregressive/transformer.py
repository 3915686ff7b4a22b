"""A decoder-only Transformer over discretised pixels or audio samples: the ``transformer`` architecture.

An example becomes a sequence of codes (``discrete.py``): an image's intensities in raster
order, the channels of a pixel innermost (uniform levels), or a clip's mu-law codes. The
model predicts each code from all codes before it,

    log P(x) = sum_p log P(code_p | code_<p),

with a causal Transformer (pre-LayerNorm blocks, multi-head self-attention that attends to
earlier positions only, GELU MLP). The input at position p is the embedding of code p - 1
(position 0: a learned start embedding, or the class's embedding for a conditional model)
plus the embedding of position p: row + column + channel embeddings for images (2-D), one
learned embedding per time for audio (1-D).

Generation caches each block's keys and values, so a new code costs one position through the
blocks (``sample(cached=True)``, the default); ``cached=False`` recomputes the whole prefix for
every code and draws the same samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_autoregressive.discrete import (
    MuLaw,
    UniformLevels,
    check_classes,
    check_shape,
    draw,
    in_eval_mode,
    log_density,
    log_pmf,
    sampling_classes,
)
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` (N, L, H): the whole sequence (``past`` None, causal mask), or the newest
        positions after the cached ``past`` keys and values (N, heads, P, H/heads)."""
        n, length, hidden = x.shape
        q, k, v = (t.view(n, length, self.num_heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # A single new position may see every cached one; a whole sequence sees only its past.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and length > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(n, length, hidden)), (k, v)


class Block(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = CausalSelfAttention(hidden_size, num_heads, dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_ratio * hidden_size), nn.GELU(),
                                 nn.Linear(mlp_ratio * hidden_size, hidden_size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, present = self.attention(self.attention_norm(x), past)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.mlp_norm(x))), present


class PositionEmbedding(nn.Module):
    """Where each position of the sequence is: (row, column, channel) for images, time for audio."""

    def __init__(self, data_shape: tuple[int, ...], hidden_size: int):
        super().__init__()
        self.tables = nn.ParameterList(nn.Parameter(torch.randn(size, hidden_size) * 0.02) for size in self._axes(data_shape))
        # The sequence runs over the image's (row, column, channel), channels innermost.
        grids = torch.meshgrid(*(torch.arange(size) for size in self._axes(data_shape)), indexing="ij")
        self.register_buffer("indices", torch.stack([grid.flatten() for grid in grids], dim=1), persistent=False)

    @staticmethod
    def _axes(data_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (data_shape[1], data_shape[2], data_shape[0]) if len(data_shape) == 3 else tuple(data_shape)

    def forward(self, start: int, length: int) -> torch.Tensor:
        """(length, H): the embeddings of positions ``start .. start + length - 1``."""
        indices = self.indices[start : start + length]
        return sum(table[indices[:, axis]] for axis, table in enumerate(self.tables))


class Transformer(FoundryModel):
    """The model of the ``transformer`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.data_shape = tuple(params.data_shape)
        self.image = len(self.data_shape) == 3
        self.num_classes = params.num_classes
        self.quantizer = UniformLevels(params.levels) if self.image else MuLaw(params.levels)
        self.max_length = math.prod(self.data_shape)
        self.token_embedding = nn.Embedding(params.levels, params.hidden_size)
        self.start = nn.Embedding(params.num_classes or 1, params.hidden_size)
        self.positions = PositionEmbedding(self.data_shape, params.hidden_size)
        self.dropout = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(
            Block(params.hidden_size, params.num_heads, params.mlp_ratio, params.dropout) for _ in range(params.num_layers)
        )
        self.norm = nn.LayerNorm(params.hidden_size)
        self.head = nn.Linear(params.hidden_size, params.levels)

    # -- sequences of codes -----------------------------------------------------------------------
    def to_sequence(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) image codes -> (N, H*W*C) in raster order, channels innermost; audio (N, T) unchanged."""
        return codes.permute(0, 2, 3, 1).flatten(1) if self.image else codes

    def from_sequence(self, sequence: torch.Tensor) -> torch.Tensor:
        if not self.image:
            return sequence
        channels, height, width = self.data_shape
        return sequence.view(-1, height, width, channels).permute(0, 3, 1, 2)

    def _inputs(self, previous: torch.Tensor | None, start: int, length: int, classes: torch.Tensor | None,
                count: int) -> torch.Tensor:
        """Input embeddings of positions ``start ..``: the code before each (the start embedding at 0) plus the position."""
        first = self.start(classes if classes is not None else torch.zeros(count, dtype=torch.long, device=self.head.weight.device))
        pieces = [first[:, None]] if start == 0 else []
        if previous is not None:
            pieces.append(self.token_embedding(previous))
        tokens = torch.cat(pieces, dim=1)[:, :length]
        return self.dropout(tokens + self.positions(start, length))

    def _run(self, x: torch.Tensor, cache: KeyValues | None = None) -> tuple[torch.Tensor, KeyValues]:
        present = []
        for index, block in enumerate(self.blocks):
            x, key_values = block(x, cache[index] if cache else None)
            present.append(key_values)
        return self.head(self.norm(x)), present

    def logits(self, sequence: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L, levels): the distribution of each code of ``sequence`` (N, L) given the codes before it."""
        n, length = sequence.shape
        return self._run(self._inputs(sequence[:, :-1], 0, length, classes, n))[0]

    # -- the protocol ---------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor | None = None, input_values: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> ModelOutput:
        """The negative mean log-likelihood, in nats per example."""
        return ModelOutput(loss=-self.log_prob(pixel_values=pixel_values, input_values=input_values,
                                               class_labels=class_labels).mean())

    def log_pmf(self, pixel_values: torch.Tensor | None = None, input_values: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(codes)`` of each example's codes (N,), in nats."""
        sequence = self.to_sequence(self._codes(pixel_values, input_values))
        classes = check_classes(self, class_labels, sequence.shape[0], from_data=True)
        return log_pmf(self.logits(sequence, classes), sequence)

    def log_prob(self, pixel_values: torch.Tensor | None = None, input_values: torch.Tensor | None = None,
                 class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-density of each example (N,), in nats (see ``discrete.py`` for the convention)."""
        codes = self._codes(pixel_values, input_values)
        return log_density(self.log_pmf(pixel_values, input_values, class_labels), codes, self.quantizer)

    @torch.no_grad()
    @in_eval_mode
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               conditions: torch.Tensor | None = None, cached: bool = True) -> torch.Tensor:
        """``num_samples`` examples in the data's layout (images (N, C, H, W), audio (N, T)), code by code.

        ``cached`` (default): each block keeps its keys and values, one position per step;
        ``cached=False`` recomputes the prefix for every code, drawing the same samples."""
        device = self.head.weight.device
        classes = sampling_classes(self, conditions, num_samples, generator, device)
        sequence = torch.zeros(num_samples, self.max_length, dtype=torch.long, device=device)
        cache = None
        for p in range(self.max_length):
            if cached:
                previous = sequence[:, p - 1 : p] if p else None
                logits, cache = self._run(self._inputs(previous, p, 1, classes, num_samples), cache)
                logits = logits[:, -1]
            else:
                logits = self.logits(sequence[:, : p + 1], classes)[:, p]
            sequence[:, p] = draw(logits, generator)
        return self.quantizer.values(self.from_sequence(sequence))

    def _codes(self, pixel_values: torch.Tensor | None, input_values: torch.Tensor | None) -> torch.Tensor:
        if self.image:
            return self.quantizer.codes(check_shape(self, pixel_values, "pixel_values", self.data_shape, "data_shape"))
        if input_values is None or input_values.dim() != 2:
            raise FoundryError(f"{self.architecture} for audio needs 'input_values' of shape (N, time), got "
                               f"{None if input_values is None else list(input_values.shape)}")
        if not 1 <= input_values.shape[1] <= self.max_length:
            raise FoundryError(f"{self.architecture} was built for clips of at most {self.max_length} samples "
                               f"(model.data_shape), and these have {input_values.shape[1]}; raise model.data_shape")
        return self.quantizer.codes(input_values)


def build(config: ModelConfig) -> Transformer:
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    params = config.params
    image = len(params.data_shape) == 3
    if params.modality is not None and image != (params.modality == "image"):
        expected = "[channels, height, width]" if params.modality == "image" else "[length]"
        raise FoundryError(f"model.data_shape of a transformer for {params.modality} data must be {expected}, "
                           f"not {list(params.data_shape)}")
    return Transformer(config)
