"""The lecture notes' worked examples (docs/models.md, C) as exact tests of the primitives every network uses.

"Convolution" in the notes is cross-correlation, which is what torch's conv2d computes.
"""

import pytest
import torch
import torch.nn.functional as F

from stride.architectures.arithmetic import conv_output_size


def as_batch(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None, None]


VERTICAL_EDGE = as_batch([[1, 0, -1]] * 3)


def test_vertical_edge_detector_on_the_6x6_image():
    image = as_batch([[3, 0, 1, 2, 7, 4], [1, 5, 8, 9, 3, 1], [2, 7, 2, 5, 1, 3],
                      [0, 1, 3, 1, 7, 8], [4, 2, 1, 6, 2, 8], [2, 4, 5, 2, 3, 9]])
    expected = as_batch([[-5, -4, 0, 8], [-10, -2, 2, 3], [0, -2, -4, -7], [-3, -2, -3, -16]])
    assert torch.equal(F.conv2d(image, VERTICAL_EDGE), expected)


def test_vertical_edge_between_bright_and_dark_halves():
    image = as_batch([[10, 10, 10, 0, 0, 0]] * 6)
    assert torch.equal(F.conv2d(image, VERTICAL_EDGE), as_batch([[0, 30, 30, 0]] * 4))


POOL_INPUT = as_batch([[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]])


def test_max_pooling_2x2_stride_2():
    assert torch.equal(F.max_pool2d(POOL_INPUT, 2, 2), as_batch([[9, 2], [6, 3]]))


def test_average_pooling_2x2_stride_2():
    assert torch.equal(F.avg_pool2d(POOL_INPUT, 2, 2), as_batch([[3.75, 1.25], [3.75, 2]]))


@pytest.mark.parametrize("size", [5, 6, 7, 28, 32])
@pytest.mark.parametrize("kernel_size, stride, padding", [(1, 1, 0), (3, 1, 0), (3, 1, 1), (5, 1, 2), (3, 2, 1),
                                                          (2, 2, 0), (5, 2, 0), (3, 3, 2)])
def test_output_size_formula_is_what_torch_computes(size, kernel_size, stride, padding):
    x = torch.zeros(1, 1, size, size)
    weight = torch.zeros(1, 1, kernel_size, kernel_size)
    expected = conv_output_size(size, kernel_size, stride, padding)
    assert F.conv2d(x, weight, stride=stride, padding=padding).shape[-1] == expected
    if 2 * padding <= kernel_size:  # pooling pads at most half its window
        assert F.max_pool2d(x, kernel_size, stride, padding).shape[-1] == expected


def test_output_size_worked_numbers():
    assert conv_output_size(6, 3) == 4  # the 6x6 image and 3x3 filter above
    assert conv_output_size(32, 5, stride=1, padding=2) == 32  # the CUDA thesis's 'SAME' 5x5 convolutions
    assert conv_output_size(32, 2, stride=2) == 16
    assert conv_output_size(227, 11, stride=4) == 55  # AlexNet's first layer
