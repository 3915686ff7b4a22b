"""Normalizing flows: the ``flow`` architecture.

A flow is an invertible map f from data x to latents z = f(x) with a standard normal z, so that
the density of x is exact by the change of variables:

    log p(x) = log N(f(x); 0, I) + log |det df/dx|

and a sample is f^-1(z) for a drawn z. Every layer below maps ``x -> (y, log|det dy/dx|)`` per
example and has an ``inverse``.

Images (``realnvp``, ``glow``), after Dinh et al. 2017 and Kingma & Dhariwal 2018:

1. dequantisation: a pixel x on a grid of ``levels`` values in [-1, 1] (bin width w = 2 / (levels - 1))
   becomes x + w (u - 1/2) with u in (0, 1)^D, uniform or drawn from a learned flow q(u | x);
2. the logit transform: p = (x + 1 + w/2) / (2 + w) in (0, 1), y = logit(alpha + (1 - 2 alpha) p);
3. scales: squeeze (each 2x2 patch to 4 channels), flow steps (actnorm; glow: invertible 1x1
   convolution; an affine coupling with a checkerboard or channel mask), and all but the last
   scale factor half of the channels out as latents.

For discrete pixels, ``log_prob`` is the dequantisation bound
``log P(bin) - D log w >= E_q[log p(x + w (u - 1/2)) - log q(u | x)]``, the form the core's
``bits_per_dim`` metric reads (it adds log((levels - 1) / 2) = -log w nats per dimension).

Vectors (``maf``, ``nsf``) are zuko's masked autoregressive flows, with affine or rational-quadratic
spline transforms (Papamakarios et al. 2017, Durkan et al. 2019), run layer by layer here so that a
non-finite log-determinant can be named.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_flow.config import IMAGE_FLOWS, FlowConfig
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput, batch_examples

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
# log|det| terms of one pass through a flow, in order: (the layer, one value per example)
LogDetTerms = list[tuple[nn.Module, torch.Tensor]]


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) of each example (the first dimension indexes examples)."""
    return (-0.5 * z.square() - HALF_LOG_TWO_PI).flatten(1).sum(1)


def per_example(value: torch.Tensor, count: int) -> torch.Tensor:
    """A log-determinant that is the same for every example, as one value per example."""
    return value.expand(count)


# --- image layers -----------------------------------------------------------------------------------


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2): each 2x2 patch becomes four channels (a permutation: log|det| 0)."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, h * 2, w * 2)


class LogitTransform(nn.Module):
    """Pixels in data units (dequantised: within [-1 - w/2, 1 + w/2]) to the real line:
    p = (x + 1 + w/2) / (2 + w), y = logit(alpha + (1 - 2 alpha) p)."""

    def __init__(self, bin_width: float, alpha: float):
        super().__init__()
        self.bin_width, self.alpha = bin_width, alpha

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, alpha = self.bin_width, self.alpha
        s = alpha + (1 - 2 * alpha) * (x + 1 + w / 2) / (2 + w)
        y = torch.log(s) - torch.log1p(-s)
        log_det = math.log(1 - 2 * alpha) - math.log(2 + w) - torch.log(s) - torch.log1p(-s)
        return y, log_det.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w, alpha = self.bin_width, self.alpha
        return (torch.sigmoid(y) - alpha) / (1 - 2 * alpha) * (2 + w) - 1 - w / 2


class ActNorm(nn.Module):
    """y = (x + b) exp(s) per channel, initialised on the first training batch to zero mean and unit variance."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(x)
        y = (x + self.bias) * self.log_scale.exp()
        return y, per_example(self.log_scale.sum() * x.shape[2] * x.shape[3], x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        # The moments of the batches of every process, so that replicas of a distributed run start alike.
        moments = torch.stack([x.mean(dim=(0, 2, 3)), x.square().mean(dim=(0, 2, 3))])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(moments)
            moments /= torch.distributed.get_world_size()
        mean, mean_square = moments
        std = (mean_square - mean.square()).clamp_min(0).sqrt()
        self.bias.copy_(-mean.view_as(self.bias))
        self.log_scale.copy_(-torch.log(std + 1e-6).view_as(self.log_scale))
        self.initialized.fill_(True)


class InvertibleConv1x1(nn.Module):
    """y = W x at every pixel, W a C x C invertible matrix started at a random rotation; log|det| = H W log|det W|.

    With ``lu_decomposed``, W = P L (U + diag(sign exp(s))) with P fixed, L unit lower and U strictly upper
    triangular, so log|det W| = sum(s) costs O(C) and W stays invertible while s is finite.
    """

    def __init__(self, channels: int, lu_decomposed: bool):
        super().__init__()
        device = torch.empty(0).device  # the device being built on (meta for size summaries)
        rotation = torch.linalg.qr(torch.randn(channels, channels, device="cpu"))[0]
        self.lu_decomposed = lu_decomposed
        if not lu_decomposed:
            self.weight = nn.Parameter(rotation.to(device))
            return
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = upper.diagonal()
        self.register_buffer("permutation", permutation.to(device))
        self.register_buffer("sign", diagonal.sign().to(device))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels, device="cpu"), -1).to(device))
        self.lower = nn.Parameter(lower.to(device))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(device))
        self.log_scale = nn.Parameter(diagonal.abs().log().to(device))

    def matrix(self) -> torch.Tensor:
        if not self.lu_decomposed:
            return self.weight
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_scale.exp())
        return self.permutation @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        return self.log_scale.sum() if self.lu_decomposed else torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.matrix()
        y = F.conv2d(x, weight.view(*weight.shape, 1, 1))
        return y, per_example(self.log_abs_det() * x.shape[2] * x.shape[3], x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        inverse = torch.linalg.inv(self.matrix())
        return F.conv2d(y, inverse.view(*inverse.shape, 1, 1))


def coupling_network(in_channels: int, hidden: int, out_channels: int, hidden_layers: int) -> nn.Sequential:
    """3x3 conv, (1x1 conv) x (hidden_layers - 1), 3x3 conv; the last starts at zero, so a coupling starts as the identity."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU()]
    for _ in range(hidden_layers - 1):
        layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
    last = nn.Conv2d(hidden, out_channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def checkerboard(x: torch.Tensor, parity: int) -> torch.Tensor:
    """(1, 1, H, W): 1 at the pixels a checkerboard coupling keeps, 0 at those it transforms."""
    rows = torch.arange(x.shape[2], device=x.device)[:, None]
    columns = torch.arange(x.shape[3], device=x.device)[None, :]
    return ((rows + columns + parity) % 2).to(x.dtype)[None, None]


class AffineCoupling(nn.Module):
    """The kept part passes unchanged; the rest becomes x exp(s) + t, with (s, t) computed from the kept part
    (and a ``context`` image, for the variational dequantiser); log|det| = sum(s).

    The mask is ``checkerboard`` (pixels of one colour kept) or ``channel`` (one half of the channels kept);
    ``parity`` picks which part is kept. s = scale * tanh(raw) keeps each step's stretch bounded.
    """

    def __init__(self, channels: int, mask: str, parity: int, hidden: int, hidden_layers: int, context_channels: int = 0):
        super().__init__()
        self.mask, self.parity = mask, parity
        if mask == "channel":
            self.kept = channels // 2 if parity == 0 else channels - channels // 2
            kept, changed = self.kept, channels - self.kept
        else:
            kept, changed = channels, channels
        self.net = coupling_network(kept + context_channels, hidden, 2 * changed, hidden_layers)
        self.scale = nn.Parameter(torch.ones(1, changed, 1, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            kept, changed = self._split(x)
            log_scale, shift = self._scale_and_shift(kept, context)
            return self._join(kept, changed * log_scale.exp() + shift), log_scale.flatten(1).sum(1)
        keep = checkerboard(x, self.parity)
        log_scale, shift = self._scale_and_shift(x * keep, context)
        log_scale, shift = log_scale * (1 - keep), shift * (1 - keep)
        return x * log_scale.exp() + shift, log_scale.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.mask == "channel":
            kept, changed = self._split(y)
            log_scale, shift = self._scale_and_shift(kept, context)
            return self._join(kept, (changed - shift) * torch.exp(-log_scale))
        keep = checkerboard(y, self.parity)
        log_scale, shift = self._scale_and_shift(y * keep, context)
        return (y - shift * (1 - keep)) * torch.exp(-log_scale * (1 - keep))

    def _scale_and_shift(self, kept: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = kept if context is None else torch.cat([kept, context], 1)
        raw_scale, shift = self.net(inputs).chunk(2, 1)
        return self.scale * torch.tanh(raw_scale), shift

    # parity 0 keeps the first channels, parity 1 the last ones
    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.parity == 0:
            return x[:, : self.kept], x[:, self.kept :]
        return x[:, -self.kept :], x[:, : -self.kept]

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, changed] if self.parity == 0 else [changed, kept], 1)


class VariationalDequantizer(nn.Module):
    """q(u | x) over u in (0, 1)^D (Ho et al. 2019): u = sigmoid(h), h = couplings(eps; conditioned on x),
    eps ~ N(0, I); log q(u | x) = log N(eps) - log|det dh/deps| - sum log sigmoid'(h)."""

    def __init__(self, channels: int, hidden: int, hidden_layers: int, steps: int = 4):
        super().__init__()
        self.couplings = nn.ModuleList(
            AffineCoupling(channels, "checkerboard", step % 2, hidden, hidden_layers, context_channels=channels)
            for step in range(steps)
        )

    def forward(self, x: torch.Tensor, eps: torch.Tensor, terms: LogDetTerms) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise u for data ``x`` from standard normal ``eps``, and log q(u | x) per example."""
        h, log_det = eps, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for coupling in self.couplings:
            h, term = coupling(h, context=x)
            terms.append((coupling, term))
            log_det = log_det + term
        log_sigmoid_det = (F.logsigmoid(h) + F.logsigmoid(-h)).flatten(1).sum(1)
        return torch.sigmoid(h), standard_normal_log_prob(eps) - log_det - log_sigmoid_det


# --- the models ---------------------------------------------------------------------------------------


class NormalizingFlow(FoundryModel):
    """What every flow shares: the batch, the loss, the check of its log-determinants, sampling."""

    input_key = "pixel_values"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.params: FlowConfig = config.params
        self.data_shape = self.params.shape
        self.dimension = self.params.dimension

    def forward(self, pixel_values: torch.Tensor | None = None, vectors: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> ModelOutput:
        """The negative mean log-likelihood of the batch (images: its dequantised bound, one noise draw), in nats."""
        x = batch_examples(self, self.data_shape, "model.data_shape", pixel_values=pixel_values, vectors=vectors)
        terms: LogDetTerms = []
        log_prob = self._training_log_prob(x, terms)
        self._check_finite(log_prob, terms)
        return ModelOutput(loss=-log_prob.mean())

    def log_prob(self, pixel_values: torch.Tensor | None = None, vectors: torch.Tensor | None = None,
                 class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Each example's log-density in nats (N,); of dequantised images, the bound the module docstring gives."""
        return self._log_prob(batch_examples(self, self.data_shape, "model.data_shape", pixel_values=pixel_values, vectors=vectors))

    def encode(self, pixel_values: torch.Tensor | None = None, vectors: torch.Tensor | None = None,
               class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The latents z = f(x), (N, D); images are taken as the continuous points they are (no noise)."""
        return self._encode(batch_examples(self, self.data_shape, "model.data_shape", pixel_values=pixel_values, vectors=vectors))

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               conditions: torch.Tensor | None = None) -> torch.Tensor:
        """f^-1(z) for z ~ N(0, temperature^2 I) drawn from ``generator``; images are rounded to their grid."""
        if conditions is not None:
            raise FoundryError(f"a {self.architecture} model is unconditional; sample without conditions")
        device = generator.device if generator is not None else self._device()
        z = torch.randn(num_samples, self.dimension, generator=generator, device=device) * self.params.temperature
        parameter = next(self.parameters())
        samples = self.decode(z.to(device=parameter.device, dtype=parameter.dtype))
        return self._on_grid(samples).float()

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_finite(self, log_prob: torch.Tensor, terms: LogDetTerms) -> None:
        """Stop training at the first layer whose log-determinant is not finite (one check per step when all is well)."""
        if bool(torch.isfinite(log_prob).all()):
            return
        names = {module: name for name, module in self.named_modules()}
        for module, term in terms:
            if not bool(torch.isfinite(term).all()):
                raise FoundryError(
                    f"the log-determinant of layer {names.get(module, '?')} ({type(module).__name__}) of this "
                    f"{self.params.flow_type} flow is not finite: training diverged; lower training.learning_rate "
                    "or training.max_grad_norm, or use more warmup_steps"
                )
        raise FoundryError(
            f"the log-likelihood of this {self.params.flow_type} flow is not finite (its latents overflowed): "
            "training diverged; lower training.learning_rate or training.max_grad_norm"
        )

    # each flow defines these
    def _training_log_prob(self, x: torch.Tensor, terms: LogDetTerms) -> torch.Tensor:
        raise NotImplementedError

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The data x = f^-1(z) of latents (N, D), continuous."""
        raise NotImplementedError

    def _on_grid(self, samples: torch.Tensor) -> torch.Tensor:
        return samples


class ImageFlow(NormalizingFlow):
    """Multi-scale RealNVP or Glow over (C, H, W) images in [-1, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = self.params
        channels, height, width = self.data_shape
        self.levels = params.levels
        self.bin_width = 2 / (params.levels - 1) if params.dequantizer != "none" else 0.0
        self.logit = LogitTransform(self.bin_width, params.logit_alpha)
        self.dequantizer = (
            VariationalDequantizer(channels, params.hidden_channels, params.hidden_layers)
            if params.dequantizer == "variational" else None
        )
        self.scales = nn.ModuleList()
        self.kept_channels: list[int] = []  # channels that go on to the next scale
        for scale in range(params.num_scales):
            channels, height, width = channels * 4, height // 2, width // 2
            self.scales.append(nn.ModuleList(self._step_layers(channels, step) for step in range(params.steps_per_scale)))
            self.kept_channels.append(channels // 2 if scale < params.num_scales - 1 else channels)
            channels = self.kept_channels[-1]
        # Noise draws of log_prob: the same for every example, so that its value does not depend on the batch.
        noise = torch.Generator().manual_seed(0)
        draw = torch.randn if self.dequantizer is not None else torch.rand
        self.register_buffer(
            "eval_noise", draw(params.eval_noise_samples, *self.data_shape, generator=noise, device="cpu").to(torch.empty(0).device),
            persistent=False,
        )

    def _step_layers(self, channels: int, step: int) -> nn.Sequential:
        params = self.params
        mask = params.mask
        if mask == "alternate":
            mask = "checkerboard" if step < (params.steps_per_scale + 1) // 2 else "channel"
        layers: list[nn.Module] = []
        if params.actnorm:
            layers.append(ActNorm(channels))
        if params.flow_type == "glow":
            layers.append(InvertibleConv1x1(channels, params.lu_decomposed))
        layers.append(AffineCoupling(channels, mask, step % 2, params.hidden_channels, params.hidden_layers))
        return nn.Sequential(*layers)

    # -- x -> z --------------------------------------------------------------------------------------
    def _flow(self, h: torch.Tensor, terms: LogDetTerms) -> torch.Tensor:
        """Flatten-and-concatenated latents (N, D) of logit-space images h, and every layer's log|det| in ``terms``."""
        latents = []
        for steps, kept in zip(self.scales, self.kept_channels, strict=True):
            h = squeeze(h)
            for step in steps:
                for layer in step:
                    h, term = layer(h)
                    terms.append((layer, term))
            latents.append(h[:, kept:].flatten(1))
            h = h[:, :kept]
        latents.append(h.flatten(1))
        return torch.cat(latents, 1)

    def _continuous_log_prob(self, x: torch.Tensor, terms: LogDetTerms) -> torch.Tensor:
        """log p(x) of continuous images x in data units; the layers' log|det| are appended to ``terms``."""
        h, term = self.logit(x)
        own: LogDetTerms = [(self.logit, term)]
        z = self._flow(h, own)
        terms.extend(own)
        return standard_normal_log_prob(z) + sum(term for _, term in own)

    def _dequantized_log_prob(self, x: torch.Tensor, noise: torch.Tensor, terms: LogDetTerms) -> torch.Tensor:
        """log p(x + w (u - 1/2)) - log q(u | x): u is ``noise`` (uniform), or the dequantiser's u of normal ``noise``."""
        if self.bin_width == 0:
            return self._continuous_log_prob(x, terms)
        if self.dequantizer is None:
            u, log_q = noise, 0.0
        else:
            u, log_q = self.dequantizer(x, noise, terms)
        return self._continuous_log_prob(x + self.bin_width * (u - 0.5), terms) - log_q

    def _training_log_prob(self, x: torch.Tensor, terms: LogDetTerms) -> torch.Tensor:
        self._check_range(x)
        noise = torch.randn_like(x) if self.dequantizer is not None else torch.rand_like(x)
        return self._dequantized_log_prob(x, noise, terms)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self._check_range(x)
        if self.bin_width == 0:
            return self._continuous_log_prob(x, [])
        bounds = torch.stack([self._dequantized_log_prob(x, noise.to(x.dtype).expand_as(x), []) for noise in self.eval_noise])
        return torch.logsumexp(bounds, 0) - math.log(len(self.eval_noise))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._flow(self.logit(x)[0], [])

    # -- z -> x --------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The images f^-1(z) (N, C, H, W) of latents (N, D), before rounding to the grid."""
        shapes = self._latent_shapes()
        pieces = latents.split([math.prod(shape) for shape in shapes], 1)
        h = pieces[-1].reshape(-1, *shapes[-1])
        for index in reversed(range(len(self.scales))):
            if index < len(self.scales) - 1:
                h = torch.cat([h, pieces[index].reshape(-1, *shapes[index])], 1)
            for step in reversed(self.scales[index]):
                for layer in reversed(step):
                    h = layer.inverse(h)
            h = unsqueeze(h)
        return self.logit.inverse(h)

    def _latent_shapes(self) -> list[tuple[int, int, int]]:
        """The shape of each scale's factored-out latents, then of the last scale's."""
        channels, height, width = self.data_shape
        shapes = []
        for kept in self.kept_channels:
            channels, height, width = channels * 4, height // 2, width // 2
            shapes.append((channels - kept, height, width))
            channels = kept
        shapes[-1] = (channels, height, width)
        return shapes

    def _on_grid(self, samples: torch.Tensor) -> torch.Tensor:
        if self.bin_width == 0:
            return samples.clamp(-1, 1)
        return ((samples + 1) / self.bin_width).round().clamp(0, self.levels - 1) * self.bin_width - 1

    def _check_range(self, x: torch.Tensor) -> None:
        low, high = (float(v) for v in torch.aminmax(x.detach()))
        if low < -1 - 1e-5 or high > 1 + 1e-5:
            raise FoundryError(
                f"the {self.params.flow_type} flow takes pixel values in [-1, 1] (the image datasets' range), and this "
                f"batch's lie in [{low:.4g}, {high:.4g}]: the {self.params.dequantizer} dequantiser and the logit "
                "transform cannot take them; scale the data to [-1, 1]"
            )


class VectorFlow(NormalizingFlow):
    """MAF or NSF over (D,) vectors: zuko's flows, run one transform at a time."""

    input_key = "vectors"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        import zuko

        params = self.params
        (features,) = self.data_shape
        hidden = [params.hidden_channels] * params.hidden_layers
        device = torch.empty(0).device
        with torch.device("cpu"):  # zuko's masks need torch.unique, which the meta device lacks
            if params.flow_type == "maf":
                flow = zuko.flows.MAF(features=features, transforms=params.steps_per_scale, hidden_features=hidden)
            else:
                flow = zuko.flows.NSF(
                    features=features, bins=params.bins, transforms=params.steps_per_scale, hidden_features=hidden
                )
        self.flow = flow if device.type == "cpu" else flow.to(device)

    def _training_log_prob(self, x: torch.Tensor, terms: LogDetTerms) -> torch.Tensor:
        distribution = self.flow()
        z = x
        for layer, transform in zip(self.flow.transform.transforms, distribution.transform.transforms, strict=True):
            z, term = transform.call_and_ladj(z)
            terms.append((layer, term))
        return distribution.base.log_prob(z) + sum(term for _, term in terms)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._training_log_prob(x, [])

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow().transform(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The vectors f^-1(z) (N, D) of latents (N, D)."""
        return self.flow().transform.inv(latents)


def build(config: ModelConfig) -> NormalizingFlow:
    params: FlowConfig = config.params
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    wanted = "image" if params.flow_type in IMAGE_FLOWS else "vector"
    if params.modality not in (None, wanted):
        raise FoundryError(
            f"a {params.flow_type} flow models {wanted}s, and it is being built for {params.modality} data; "
            f"give it {wanted} data (create_model(..., modality={wanted!r}), or a data section of {wanted}s), "
            f"or use flow_type {' or '.join(('realnvp', 'glow') if params.modality == 'image' else ('maf', 'nsf'))}"
        )
    problems = [f"model.{key}: {message}" for key, message in params.validate()]
    if problems:
        raise FoundryError("; ".join(problems))
    return ImageFlow(config) if wanted == "image" else VectorFlow(config)
