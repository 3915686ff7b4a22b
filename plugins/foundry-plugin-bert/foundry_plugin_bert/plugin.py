"""The BERT plugin: transformers' ``BertForMaskedLM`` through the core's transformers adapter.

``BERT`` is the entry point: it answers the plugin hooks (schema, builder, the converter that
imports a transformers BERT directory, the ``hf`` exporter). Its model class,
:class:`foundry_plugin_bert.model.BertLanguageModel`, adds segment ids and a pooled output to
the adapter's model. BERT attends in both directions, so it does not generate text. No torch
is imported here.
"""

from __future__ import annotations

from foundry_plugin_bert.config import PRESETS, BertConfig
from model_foundry.plugin import TransformersArchitecture

BERT = TransformersArchitecture(
    name="bert", config_class=BertConfig, presets=PRESETS,
    hf_model="BertForMaskedLM", objective="masked_lm", family="transformer-encoder",
    model="foundry_plugin_bert.model:BertLanguageModel",
    description="BERT masked language model (transformers' BertForMaskedLM)",
    # Foundry field: the transformers BertConfig field holding its value
    fields={
        "tie_word_embeddings": "tie_word_embeddings", "bert.type_vocab_size": "type_vocab_size",
        "transformer.layers": "num_hidden_layers", "transformer.hidden_size": "hidden_size",
        "transformer.attention_heads": "num_attention_heads", "transformer.intermediate_hidden_size": "intermediate_size",
        "transformer.activation_function": "hidden_act", "transformer.dropout": "hidden_dropout_prob",
        "transformer.attention_dropout": "attention_probs_dropout_prob",
        "transformer.max_position_embeddings": "max_position_embeddings", "transformer.layer_norm_eps": "layer_norm_eps",
        "transformer.initializer_range": "initializer_range",
    },
    requires={"is_decoder": False, "add_cross_attention": False, "position_embedding_type": "absolute"},
)
