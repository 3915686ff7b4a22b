"""Hook implementations of foundry-plugin-autoregressive: ``pixelcnn``, ``wavenet`` and ``transformer``.

Only hooks, and no torch: each model is named as ``"module:function"`` and imported when a
model is first built.
"""

from __future__ import annotations

from foundry_plugin_autoregressive.config import (
    PIXELCNN_PRESETS,
    TRANSFORMER_PRESETS,
    WAVENET_PRESETS,
    PixelCNNConfig,
    TransformerConfig,
    WaveNetConfig,
)
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl


def _capabilities(modality: str, modalities: tuple[str, ...]) -> Capabilities:
    return Capabilities(modality=modality, modalities=modalities, sampling=True, likelihood="exact", conditional=True)


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="pixelcnn", config_class=PixelCNNConfig, family="autoregressive",
            description="PixelCNN: masked convolutions over pixels in raster order (gated, no blind spot, by default)",
            presets=PIXELCNN_PRESETS, capabilities=_capabilities("image", ("image",)),
        ),
        ArchitectureSchema(
            name="wavenet", config_class=WaveNetConfig, family="autoregressive",
            description="WaveNet: dilated causal convolutions over mu-law audio, cached one-step generation",
            presets=WAVENET_PRESETS, capabilities=_capabilities("audio", ("audio",)),
        ),
        ArchitectureSchema(
            name="transformer", config_class=TransformerConfig, family="autoregressive",
            description="decoder-only Transformer over discretised pixels (2-D positions) or audio samples (1-D)",
            presets=TRANSFORMER_PRESETS, capabilities=_capabilities("image", ("image", "audio")),
        ),
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [
        ModelBuilder("pixelcnn", "foundry_plugin_autoregressive.pixelcnn:build"),
        ModelBuilder("wavenet", "foundry_plugin_autoregressive.wavenet:build"),
        ModelBuilder("transformer", "foundry_plugin_autoregressive.transformer:build"),
    ]
