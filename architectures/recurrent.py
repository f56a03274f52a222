"""LSTM, GRU and dilated GRU baselines for sequence classification (docs/models.md, A2: Bai et al. Table 1;
the TCN study's Tables 4-5 reference row, Chang et al. 2017's Dilated RNN).

They take the TCN's input layout [B, C, T] and classify from the last time step, so
the same data and task module serve them all.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
import torch.nn.functional as F
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


class DilatedGRU(nn.Module):
    """Stacked GRU layers whose recurrence skips time steps (Chang et al. 2017, "Dilated Recurrent Neural
    Networks"): layer l links step t to step t - 2^l, so the top layers span the whole sequence in few steps.

    A layer with dilation d runs one GRU over the d interleaved sub-sequences at once (batched), after
    padding the start with zeros so the last step stays last: nothing reads the future."""

    def __init__(self, in_channels: int, num_classes: int, hidden_size: int, dilations: list[int]):
        super().__init__()
        self.dilations = dilations
        self.layers = nn.ModuleList(nn.GRU(in_channels if i == 0 else hidden_size, hidden_size, batch_first=True)
                                    for i in range(len(dilations)))
        self.head = nn.Linear(hidden_size, num_classes)

    @staticmethod
    def dilated(layer: nn.Module, x: Tensor, dilation: int) -> Tensor:
        """[B, T, C] -> [B, T, H] with the recurrence over steps `dilation` apart."""
        batch, steps, _ = x.shape
        padded_steps = -(-steps // dilation) * dilation
        x = F.pad(x, (0, 0, padded_steps - steps, 0))
        streams = x.reshape(batch, padded_steps // dilation, dilation, -1).transpose(1, 2)
        out, _ = layer(streams.reshape(batch * dilation, padded_steps // dilation, -1))
        out = out.reshape(batch, dilation, padded_steps // dilation, -1).transpose(1, 2)
        return out.reshape(batch, padded_steps, -1)[:, padded_steps - steps:]

    def features(self, x: Tensor) -> Tensor:
        """Per-time-step hidden states [B, hidden_size, T] of the top layer."""
        out = x.transpose(1, 2)
        for layer, dilation in zip(self.layers, self.dilations):
            out = self.dilated(layer, out, dilation)
        return out.transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)[:, :, -1])


@register("dilated_gru", task="sequence_classification")
def build_dilated_gru(*, input_shape: tuple[int, ...], num_classes: int, hidden_size: PositiveInt = 20,
                      num_layers: PositiveInt = 9) -> nn.Module:
    """Dilations 1, 2, 4, ..., 2^(num_layers - 1) (Chang et al.'s 1 to 256 for pixel MNIST at 9 layers)."""
    return DilatedGRU(input_shape[0], num_classes, hidden_size, [2 ** i for i in range(num_layers)])
