"""Temporal convolutional networks (docs/models.md, A2; section 7 of the TCN study, Bai et al. 2018).

A conv unit is a causal dilated conv (eq. 59) with weight normalisation, ReLU and
dropout. Units are grouped into residual blocks of fig. 18; both (Single/Double) or all
four (Radical) units of a block share the block's dilation, as in Bai et al. Every skip
adds the activation at its source to the activation after the target unit's dropout,
and there is no ReLU after a sum (the author's code). The classifier reads the last
time step only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Annotated, Any, Literal

import pydantic
from pydantic import PositiveInt
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from stride.architectures.registry import register, validate_params
from stride.errors import StrideError

CONVS_PER_BLOCK = {"single": 2, "double": 2, "radical": 4}
SEED_CONVS = 24  # the study compares blocks at equal depth: 12 Single/Double or 6 Radical blocks


def blocks_for(block: str, num_blocks: int | None) -> int:
    """`num_blocks` as given, or the seed's depth of 24 convs for this block type."""
    return num_blocks if num_blocks is not None else SEED_CONVS // CONVS_PER_BLOCK[block]
_NAMED_SCHEDULES = ("exponential", "linear", "constant")


def _check_schedule(schedule: str | list[int]) -> str | list[int]:
    if isinstance(schedule, str) and schedule not in _NAMED_SCHEDULES:
        _linear_slope(schedule)
    return schedule


def _linear_slope(schedule: str) -> Fraction:
    kind, _, slope = schedule.partition(":")
    try:
        value = Fraction(slope) if kind == "linear" else Fraction(-1)  # exact: 1 + 1.4 * 5 floors to 8
    except ValueError:
        value = Fraction(-1)
    if value < 0:
        raise ValueError(f"{schedule!r} is not a dilation schedule; allowed: "
                         f"{', '.join(_NAMED_SCHEDULES)}, 'linear:<slope >= 0>' or a list of positive ints")
    return value


DilationSchedule = Annotated[str | list[PositiveInt], pydantic.AfterValidator(_check_schedule)]
Probability = Annotated[float, pydantic.Field(ge=0.0, lt=1.0)]


def dilations(schedule: str | Sequence[int], num_blocks: int) -> list[int]:
    """Dilation of each block b = 1..num_blocks.

    `linear` is the author's code, not his text (docs/models.md, A2): d_b = floor(1 + 1.4(b-1))
    for 12 blocks and 1 + 3(b-1) for 6. Both are one line from 1 to 16.4 spread over the
    blocks, slope 15.4/(num_blocks-1), which is the rule used for any depth.
    """
    if not isinstance(schedule, str):
        if len(schedule) != num_blocks:
            raise StrideError(f"model.dilation_schedule: {len(schedule)} dilations given for "
                              f"num_blocks={num_blocks}; give one per block")
        return [int(d) for d in schedule]
    blocks = range(num_blocks)  # b - 1
    if schedule == "exponential":
        return [2**i for i in blocks]
    if schedule == "constant":
        return [1] * num_blocks
    if schedule == "linear":
        return [math.floor(1 + Fraction("15.4") * i / max(num_blocks - 1, 1)) for i in blocks]
    try:
        slope = _linear_slope(schedule)
    except ValueError as err:
        raise StrideError(f"model.dilation_schedule: {err}") from None
    return [math.floor(1 + slope * i) for i in blocks]


def receptive_field(kernel_size: int, block_dilations: Sequence[int], convs_per_block: int = 1) -> int:
    """Eq. 62, R = 1 + sum_l d_l (k_l - 1), when each block has `convs_per_block` convs of one dilation.

    Skips only shorten paths, so the longest path (through every conv) sets R.
    """
    return 1 + convs_per_block * (kernel_size - 1) * sum(block_dilations)


def tcn_receptive_field(**hyperparams: Any) -> int:
    """Receptive field of the `tcn` built from these hyper-parameters (defaults filled in)."""
    p = validate_params("tcn", hyperparams)
    return receptive_field(p["kernel_size"], dilations(p["dilation_schedule"], blocks_for(p["block"], p["num_blocks"])),
                           CONVS_PER_BLOCK[p["block"]])


def _maybe_norm(conv: nn.Conv1d, weight_norm: bool) -> nn.Conv1d:
    return _weight_norm(conv) if weight_norm else conv


class ConvUnit(nn.Module):
    """Causal dilated conv -> ReLU -> dropout; output length equals input length (eq. 60 with s=1).

    `left` pads d(k-1) zeros on the left only (the author's smart padding, sec. 7.3);
    `symmetric_trim` pads both sides and drops the last d(k-1) outputs (Bai et al.).
    Both compute the same numbers with the same weights. With `left`, a dilation at least
    the sequence length leaves every tap but the current one in the zero padding, so the
    conv is computed as the 1x1 conv it then is (exponential schedules on short sequences).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int,
                 dropout: float, padding: str, weight_norm: bool):
        super().__init__()
        self.pad = dilation * (kernel_size - 1)
        self.dilation = dilation
        self.padding = padding
        conv_padding = self.pad if padding == "symmetric_trim" else 0
        self.conv = _maybe_norm(nn.Conv1d(in_channels, out_channels, kernel_size,
                                          padding=conv_padding, dilation=dilation), weight_norm)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == "left" and self.dilation >= x.shape[-1]:
            y = nn.functional.conv1d(x, self.conv.weight[:, :, -1:], self.conv.bias)
        elif self.padding == "left":
            y = self.conv(nn.functional.pad(x, (self.pad, 0)))
        else:
            y = self.conv(x)
            y = y[..., : y.shape[-1] - self.pad]
        return self.drop(self.act(y))


class ResidualBlock(nn.Module):
    """Fig. 18 blocks. `forward(x, carry)` returns (output, carry for the next block).

    The carry is the Double block's extra skip: the first unit's activation (after its
    own incoming skip) of block b, added to the first unit of block b+1. Single and
    Radical neither use nor pass one. A 1x1 conv projects the block input once when
    channels differ; every skip leaving the input uses that projection.
    """

    def __init__(self, kind: str, in_channels: int, channels: int, **unit: Any):
        super().__init__()
        self.kind = kind
        sizes = [in_channels] + [channels] * CONVS_PER_BLOCK[kind]
        self.units = nn.ModuleList(ConvUnit(a, b, **unit) for a, b in zip(sizes, sizes[1:]))
        self.skip = (nn.Identity() if in_channels == channels
                     else _maybe_norm(nn.Conv1d(in_channels, channels, 1), unit["weight_norm"]))

    def forward(self, x: Tensor, carry: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        u, s = self.units, self.skip(x)
        h1 = u[0](x)
        if self.kind == "radical":  # skips input->conv2, conv1->conv3, conv2 and input->output
            h2 = u[1](h1) + s
            h3 = u[2](h2) + h1
            return u[3](h3) + h2 + s, None
        if self.kind == "double" and carry is not None:
            h1 = h1 + carry
        return u[1](h1) + s, (h1 if self.kind == "double" else None)


class TCN(nn.Module):
    """Residual blocks over [B, C, T], then a linear layer on the last time step."""

    def __init__(self, in_channels: int, num_classes: int, block: str, block_dilations: Sequence[int],
                 channels: int, kernel_size: int, dropout: float, padding: str, weight_norm: bool):
        super().__init__()
        self.block_dilations = list(block_dilations)
        self.receptive_field = receptive_field(kernel_size, self.block_dilations, CONVS_PER_BLOCK[block])
        self.blocks = nn.ModuleList(
            ResidualBlock(block, in_channels if b == 0 else channels, channels, kernel_size=kernel_size,
                          dilation=d, dropout=dropout, padding=padding, weight_norm=weight_norm)
            for b, d in enumerate(self.block_dilations))
        self.head = nn.Linear(channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Per-time-step features [B, channels, T]; step t depends on inputs at steps <= t only."""
        carry = None
        for block in self.blocks:
            x, carry = block(x, carry)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)[:, :, -1])


@register("tcn", task="sequence_classification")
def build_tcn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    block: Literal["single", "double", "radical"] = "single",
    padding: Literal["left", "symmetric_trim"] = "left",
    dilation_schedule: DilationSchedule = "linear",
    kernel_size: PositiveInt = 6,
    channels: PositiveInt = 32,
    num_blocks: PositiveInt | None = None,
    dropout: Probability = 0.2,
    weight_norm: bool = True,
) -> nn.Module:
    """TCN with Single/Double/Radical residual blocks (fig. 18); seed default: 12 Single blocks, k=6, R=1001.

    Without `num_blocks` the depth is the seed's 24 convs whatever the block type, so a search
    over `block` compares like with like.
    """
    block_dilations = dilations(dilation_schedule, blocks_for(block, num_blocks))
    return TCN(input_shape[0], num_classes, block, block_dilations, channels,
               kernel_size, dropout, padding, weight_norm)
