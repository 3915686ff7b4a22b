"""The GPT-2 plugin: transformers' ``GPT2LMHeadModel`` through the core's transformers adapter.

``GPT2`` is the entry point: it answers the plugin hooks (schema, builder, the converter that
imports a transformers GPT-2 directory, the ``hf`` exporter). GPT-2 needs nothing beyond the
adapter's model: causal loss, KV-cache generation. No torch is imported here.
"""

from __future__ import annotations

from foundry_plugin_gpt2.config import PRESETS, GPT2Config
from model_foundry.plugin import TransformersArchitecture

GPT2 = TransformersArchitecture(
    name="gpt2", config_class=GPT2Config, presets=PRESETS,
    hf_model="GPT2LMHeadModel", objective="causal_lm", family="transformer-decoder",
    description="GPT-2 causal language model (transformers' GPT2LMHeadModel)",
    # Foundry field: the transformers GPT2Config field(s) holding its value
    fields={
        "tie_word_embeddings": "tie_word_embeddings", "transformer.layers": "n_layer", "transformer.hidden_size": "n_embd",
        "transformer.attention_heads": "n_head", "transformer.intermediate_hidden_size": "n_inner",
        "transformer.activation_function": "activation_function", "transformer.dropout": ("resid_pdrop", "embd_pdrop"),
        "transformer.attention_dropout": "attn_pdrop", "transformer.max_position_embeddings": "n_positions",
        "transformer.layer_norm_eps": "layer_norm_epsilon", "transformer.initializer_range": "initializer_range",
    },
    requires={"add_cross_attention": False, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
              "scale_attn_weights": True},
)
