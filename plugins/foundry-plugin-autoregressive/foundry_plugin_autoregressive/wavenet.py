"""WaveNet: the ``wavenet`` architecture (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio").

Audio in [-1, 1] is mu-law quantised to ``mu_law_levels`` codes (``discrete.py``), and each
code is predicted from the codes before it:

    log P(x_1..x_T) = sum_t log P(x_t | x_{t-R} .. x_{t-1}),   R = (kernel_size - 1) * sum(dilations) + 1

The previous code is embedded, plus a linear projection of its value (a start embedding stands
before the first sample), and flows through residual layers, each a dilated causal convolution (padded on the left only, so time
t sees t, t - d, t - 2d, ...) with a gated activation ``tanh(a) * sigmoid(b)``, a 1x1 residual
output added back to its input and a 1x1 skip output. The skips are summed, and two 1x1
convolutions with ReLUs give the logits. A conditional model adds a learned per-class bias
to every gate (global conditioning).

Generation caches each layer's past inputs (its last ``(kernel_size - 1) * dilation + 1``),
so one sample costs one step through the layers (``_Cache``): the same convolutions on a
window of length one output, hence the same numbers as the full recomputation
(``sample(..., cached=False)``), which runs the whole network on the prefix for every sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_autoregressive.discrete import (
    MuLaw,
    check_classes,
    draw,
    in_eval_mode,
    log_density,
    log_pmf,
    sampling_classes,
)
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput


class CausalConv1d(nn.Conv1d):
    """A dilated convolution padded on the left: the output at t sees the inputs t - (k-1)d .. t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.history = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.history, 0)))

    def step(self, window: torch.Tensor) -> torch.Tensor:
        """The output at the last time of ``window`` (N, C, history + 1): its taps, one output."""
        return F.conv1d(window[:, :, :: self.dilation[0]], self.weight, self.bias)


class ResidualLayer(nn.Module):
    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int, num_classes: int | None):
        super().__init__()
        self.dilated = CausalConv1d(channels, 2 * channels, kernel_size, dilation)
        self.class_bias = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._outputs(x, self.dilated(x), classes)

    def step(self, x: torch.Tensor, window: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``x`` (N, C, 1) is the newest input, ``window`` the layer's cached past ending with it."""
        return self._outputs(x, self.dilated.step(window), classes)

    def _outputs(self, x: torch.Tensor, dilated: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.class_bias is not None and classes is not None:
            dilated = dilated + self.class_bias(classes)[:, :, None]
        content, gate_logits = dilated.chunk(2, dim=1)
        z = torch.tanh(content) * torch.sigmoid(gate_logits)
        return x + self.residual(z), self.skip(z)


class WaveNet(FoundryModel):
    """The model of the ``wavenet`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.num_classes = params.num_classes
        self.sample_length = params.sample_length
        self.receptive_field = params.receptive_field
        self.mu_law = MuLaw(params.mu_law_levels)
        self.start = params.mu_law_levels  # the embedding index that stands before the first sample
        self.embedding = nn.Embedding(params.mu_law_levels + 1, params.residual_channels)
        # The previous sample's value too, not only its code's embedding: a linear path from the
        # waveform lets the network start from linear prediction instead of learning 256 embeddings first.
        self.value_projection = nn.Linear(1, params.residual_channels)
        self.layers = nn.ModuleList(
            ResidualLayer(params.residual_channels, params.skip_channels, params.kernel_size, dilation, params.num_classes)
            for dilation in params.dilations
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv1d(params.skip_channels, params.skip_channels, 1),
            nn.ReLU(), nn.Conv1d(params.skip_channels, params.mu_law_levels, 1),
        )

    def logits(self, codes: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, levels): the distribution of each code given the codes before it."""
        previous = F.pad(codes[:, :-1], (1, 0), value=self.start)
        x = self._embed(previous).transpose(1, 2)
        skips = 0
        for layer in self.layers:
            x, skip = layer(x, classes)
            skips = skips + skip
        return self.head(skips).transpose(1, 2)

    def _embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., residual_channels): each code's embedding plus a projection of its value (0 for the start)."""
        values = torch.where(codes == self.start, 0.0, self.mu_law.values(codes.clamp(max=self.start - 1)))
        return self.embedding(codes) + self.value_projection(values[..., None].to(self.embedding.weight.dtype))

    def forward(self, input_values: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> ModelOutput:
        """The negative mean log-likelihood, in nats per clip."""
        return ModelOutput(loss=-self.log_prob(input_values=input_values, class_labels=class_labels).mean())

    def log_pmf(self, input_values: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(codes)`` of each clip's mu-law codes (N,), in nats."""
        codes = self._codes(input_values)
        classes = check_classes(self, class_labels, codes.shape[0], from_data=True)
        return log_pmf(self.logits(codes, classes), codes)

    def log_prob(self, input_values: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-density of each clip (N,), in nats: the codes' probability over their mu-law bins."""
        return log_density(self.log_pmf(input_values, class_labels), self._codes(input_values), self.mu_law)

    @torch.no_grad()
    @in_eval_mode
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               conditions: torch.Tensor | None = None, length: int | None = None, cached: bool = True) -> torch.Tensor:
        """``num_samples`` clips (N, length) in [-1, 1], ``length`` defaulting to ``model.sample_length``.

        ``cached`` (default): one step through the layers per sample, each layer keeping its
        past inputs. ``cached=False`` recomputes the whole network on the prefix for every
        sample (quadratic; for tests and benchmarks), drawing the same samples."""
        device = next(self.parameters()).device
        classes = sampling_classes(self, conditions, num_samples, generator, device)
        length = self.sample_length if length is None else length
        codes = torch.zeros(num_samples, length, dtype=torch.long, device=device)
        cache = _Cache(self, num_samples, classes, device) if cached else None
        for t in range(length):
            if cache is not None:
                logits = cache.step(codes[:, t - 1] if t else None)
            else:
                logits = self.logits(codes[:, : t + 1], classes)[:, t]
            codes[:, t] = draw(logits, generator)
        return self.mu_law.values(codes)

    def _codes(self, input_values: torch.Tensor | None) -> torch.Tensor:
        if input_values is None:
            raise FoundryError(f"{self.architecture} needs a batch with 'input_values'")
        if input_values.dim() != 2 or input_values.shape[1] < 1:
            raise FoundryError(f"{self.architecture} models mono clips, a batch (N, time); got shape {list(input_values.shape)}")
        return self.mu_law.codes(input_values)


class _Cache:
    """Each layer's last ``history + 1`` inputs, so that one new code costs one pass through the layers."""

    def __init__(self, model: WaveNet, count: int, classes: torch.Tensor | None, device: torch.device):
        self.model, self.classes = model, classes
        self.start = torch.full((count,), model.start, dtype=torch.long, device=device)
        dtype = model.embedding.weight.dtype
        self.windows = [
            torch.zeros(count, layer.dilated.in_channels, layer.dilated.history + 1, device=device, dtype=dtype)
            for layer in model.layers
        ]

    def step(self, previous: torch.Tensor | None) -> torch.Tensor:
        """The logits (N, levels) of the next code, given the last one drawn (None before the first)."""
        x = self.model._embed(self.start if previous is None else previous)[:, :, None]
        skips = 0
        for index, layer in enumerate(self.model.layers):
            window = torch.cat([self.windows[index][:, :, 1:], x], dim=2)
            self.windows[index] = window
            x, skip = layer.step(x, window, self.classes)
            skips = skips + skip
        return self.model.head(skips)[:, :, 0]


def build(config: ModelConfig) -> WaveNet:
    return WaveNet(config)
