"""Recurrent language models: token embeddings -> an LSTM/GRU/RNN stack -> a vocabulary head.

Unidirectional models are causal language models (position t predicts token t+1) and
generate by carrying the recurrent state, one token of work per step. Bidirectional models
are masked language models and do not generate.

Padding is handled with packed sequences: a batch is assumed to be right-padded (each row
of ``attention_mask`` is ones, then zeros), and each row is run over its real length only,
so padding never changes the outputs at real positions, in either direction. Outputs at
padded positions are those of a zero feature vector and carry no meaning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model_foundry.plugin import (
    FoundryError,
    LanguageModel,
    ModelConfig,
    ModelOutput,
    causal_lm_loss,
    masked_lm_loss,
    with_vocab_size,
)

RECURRENT_LAYERS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentLanguageModel(LanguageModel):
    """The model of the ``lstm``, ``gru`` and ``rnn`` architectures."""

    vocabulary_layers = ("embeddings", "lm_head")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        block = params.rnn
        self.embeddings = nn.Embedding(params.vocab_size, block.embedding_size)
        self.dropout = nn.Dropout(block.dropout)
        cell_options = {"nonlinearity": block.nonlinearity} if params.cell == "rnn" else {}
        self.recurrent = RECURRENT_LAYERS[params.cell](
            input_size=block.embedding_size,
            hidden_size=block.hidden_size,
            num_layers=block.num_layers,
            dropout=block.dropout if block.num_layers > 1 else 0.0,  # torch only drops out between layers
            bidirectional=block.bidirectional,
            batch_first=True,
            **cell_options,
        )
        head_size = params.output_size
        if params.tie_word_embeddings and head_size != block.embedding_size:
            # A tied head reads vectors of the embedding size, so the recurrent output is projected to it.
            self.projection: nn.Module = nn.Linear(head_size, block.embedding_size)
            head_size = block.embedding_size
        else:
            self.projection = nn.Identity()
        self.lm_head = nn.Linear(head_size, params.vocab_size)
        self.init_vocabulary_layer(self.embeddings)
        self.init_vocabulary_layer(self.lm_head)
        self.tie_weights()

    # -- the language-model interface ---------------------------------------------------------
    @property
    def supports_generation(self) -> bool:
        return not self.config.rnn.bidirectional

    @property
    def max_sequence_length(self) -> int | None:
        return None  # a recurrent model reads sequences of any length

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output head when the config asks for it."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embeddings.weight

    def init_vocabulary_layer(self, layer: nn.Module) -> None:
        # Small uniform weights, as in the classic LSTM language models (Zaremba et al., 2014).
        nn.init.uniform_(layer.weight, -0.1, 0.1)
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Logits for every position; ``loss`` when ``labels`` are given (-100 = no loss).

        The loss is next-token cross-entropy for unidirectional models and masked-token
        cross-entropy for bidirectional ones. ``hidden_states`` (with
        ``output_hidden_states=True``) is the top layer's output, ``(batch, length, features)``.
        """
        features, _ = self._recur(input_ids, attention_mask, None)
        logits = self._head(features)
        loss = None
        if labels is not None:
            loss = (masked_lm_loss if self.config.rnn.bidirectional else causal_lm_loss)(logits, labels)
        return ModelOutput(loss=loss, logits=logits, hidden_states=features if output_hidden_states else None)

    def next_token_logits(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Carry the recurrent state: the prompt is read once, then each new token costs one step."""
        features, state = self._recur(input_ids, None, state)
        return self._head(features[:, -1]), state

    # -- the layers, in the order data flows through them --------------------------------------
    def _recur(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        """Embed and run the recurrent stack; returns the top layer's outputs and the final state."""
        embedded = self.dropout(self.embeddings(input_ids))
        if attention_mask is None or bool(attention_mask.all()):
            return self.recurrent(embedded, state)
        lengths = real_lengths(attention_mask)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, state = self.recurrent(packed, state)
        features, _ = pad_packed_sequence(output, batch_first=True, total_length=input_ids.size(1))
        return features, state

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.projection(self.dropout(features)))


def real_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """The number of real tokens in each row of a right-padded ``attention_mask``.

    Raises :class:`FoundryError` for left padding or holes, which packing cannot express.
    Rows with no real token get length 1, since a packed sequence cannot be empty; their
    outputs are padding anyway.
    """
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.size(1), device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise FoundryError(
            "recurrent models expect right padding: each attention_mask row must be ones followed by zeros "
            "(set tokenizer.padding_side = 'right')"
        )
    return lengths.clamp(min=1)


def build(model_config: ModelConfig) -> RecurrentLanguageModel:
    """The builder named by the plugin's :class:`~model_foundry.records.ModelBuilder`."""
    return RecurrentLanguageModel(with_vocab_size(model_config))
