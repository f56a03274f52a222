"""LSTM and GRU baselines for sequence classification (docs/models.md, A2, Bai et al. Table 1).

They take the TCN's input layout [B, C, T] and classify from the last time step, so
the same data and task module serve all three.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from pydantic import PositiveInt
from torch import Tensor, nn

from stride.architectures.registry import register

Probability = Annotated[float, pydantic.Field(ge=0.0, lt=1.0)]


class RecurrentClassifier(nn.Module):
    """A stacked LSTM/GRU over time, then a linear layer on the last step's hidden state."""

    def __init__(self, cell: type[nn.LSTM] | type[nn.GRU], in_channels: int, num_classes: int,
                 hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        # PyTorch applies dropout between layers only, and warns when there is none to apply.
        self.rnn = cell(in_channels, hidden_size, num_layers, batch_first=True,
                        dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Per-time-step hidden states [B, hidden_size, T] of the top layer."""
        out, _ = self.rnn(x.transpose(1, 2))
        return out.transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x.transpose(1, 2))
        return self.head(out[:, -1])


@register("lstm", task="sequence_classification")
def build_lstm(*, input_shape: tuple[int, ...], num_classes: int, hidden_size: PositiveInt = 128,
               num_layers: PositiveInt = 1, dropout: Probability = 0.0) -> nn.Module:
    """LSTM baseline: classify from the last time step's hidden state."""
    return RecurrentClassifier(nn.LSTM, input_shape[0], num_classes, hidden_size, num_layers, dropout)


@register("gru", task="sequence_classification")
def build_gru(*, input_shape: tuple[int, ...], num_classes: int, hidden_size: PositiveInt = 128,
              num_layers: PositiveInt = 1, dropout: Probability = 0.0) -> nn.Module:
    """GRU baseline: classify from the last time step's hidden state."""
    return RecurrentClassifier(nn.GRU, input_shape[0], num_classes, hidden_size, num_layers, dropout)
