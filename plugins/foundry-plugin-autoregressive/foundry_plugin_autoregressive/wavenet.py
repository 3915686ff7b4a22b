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

Generation caches each layer's past inputs (its last ``(kernel_size - 1) * dilation``), so
one sample costs one step through the layers (``_Cache``): the same weights as matrices applied
to the taps of the newest time, hence the same numbers (up to rounding) as the full
recomputation (``sample(..., cached=False)``), which runs the whole network on the prefix for
every sample.
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


class ResidualLayer(nn.Module):
    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int, num_classes: int | None):
        super().__init__()
        self.dilated = CausalConv1d(channels, 2 * channels, kernel_size, dilation)
        self.class_bias = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        dilated = self.dilated(x)
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
        with torch.inference_mode():  # cheaper per operation than no_grad; ``codes`` is an ordinary tensor
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
    """Generation state: each layer's past inputs, and the weights as matrices, so that one new
    code costs one pass through the layers with a few matrix products and no new buffers.

    Layer l's dilated convolution at time t reads its inputs at t - (k-1)d, ..., t - d, t. Its
    ring buffer holds the last (k-1)d inputs, slot ``s mod (k-1)d`` the input of time s, so the
    past taps are slots ``(t + j d) mod (k-1)d`` (j = 0 .. k-2, oldest first; zeros before the
    clip starts, the full pass's left padding), and the new input then overwrites the oldest.
    The convolution is one product of the taps with its weight reordered tap-major, the class
    bias folded into its bias; each gate output goes into its columns of one (N, layers, C)
    buffer, and all skip convolutions are one product with it at the end."""

    def __init__(self, model: WaveNet, count: int, classes: torch.Tensor | None, device: torch.device):
        self.head = model.head
        codes = torch.arange(model.start + 1, device=device)
        self.inputs = model._embed(codes)  # (levels + 1, C): the first layer's input after each code
        self.first = self.inputs[model.start].expand(count, -1)
        channels = model.embedding.embedding_dim
        self.gates = self.inputs.new_zeros(count, len(model.layers), channels)
        self.layers = []
        for layer in model.layers:
            conv = layer.dilated
            bias = conv.bias if layer.class_bias is None or classes is None else conv.bias + layer.class_bias(classes)
            span = conv.history  # (k - 1) * d past inputs
            self.layers.append((
                self.inputs.new_zeros(span, count, channels), conv.dilation[0],
                conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1).t(), bias,
                layer.residual.weight[:, :, 0].t(), layer.residual.bias,
            ))
        self.skip_weight = torch.cat([layer.skip.weight[:, :, 0] for layer in model.layers], dim=1).t()
        self.skip_bias = sum(layer.skip.bias for layer in model.layers)
        self.time = 0

    def step(self, previous: torch.Tensor | None) -> torch.Tensor:
        """The logits (N, levels) of the next code, given the last one drawn (None before the first)."""
        t = self.time
        x = self.first if previous is None else self.inputs[previous]
        for index, (past, dilation, weight, bias, residual_weight, residual_bias) in enumerate(self.layers):
            span = past.shape[0]
            taps = torch.cat([*(past[(t + j * dilation) % span] for j in range(span // dilation)), x], dim=1)
            past[t % span] = x
            content, gate = torch.addmm(bias, taps, weight).chunk(2, dim=1)
            z = torch.mul(torch.tanh(content), torch.sigmoid(gate), out=self.gates[:, index])
            x = torch.addmm(residual_bias, z, residual_weight).add_(x)
        self.time = t + 1
        skips = torch.addmm(self.skip_bias, self.gates.flatten(1), self.skip_weight)
        _, hidden, _, output = self.head
        return torch.addmm(output.bias, torch.addmm(hidden.bias, skips.relu(), hidden.weight[:, :, 0].t()).relu_(),
                           output.weight[:, :, 0].t())


def build(config: ModelConfig) -> WaveNet:
    return WaveNet(config)
