"""Batched augmentation on the device: shapes and values kept, pixels moved exactly as specified."""

import torch

from stride.datamodules.augment import random_horizontal_flip, random_shift


def ramp(batch=64, channels=3, size=8):
    """Distinct positive values per pixel, so any move is visible."""
    return (torch.arange(batch * channels * size * size, dtype=torch.float32).reshape(batch, channels, size, size)
            % 251 + 1) / 252


def test_shift_translates_each_image_by_whole_pixels_filling_zeros():
    torch.manual_seed(0)
    images = ramp()
    shifted = random_shift(images, 2)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    assert 0 <= shifted.min() and shifted.max() <= images.max()
    moves = set()
    for original, moved in zip(images, shifted):
        matches = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                   if torch.equal(moved, shift_by(original, dx, dy))]
        assert len(matches) == 1  # exactly one integer translation within +-2 px explains it
        moves.add(matches[0])
    assert len(moves) > 10  # each image draws its own offset


def shift_by(image, dx, dy):
    """The image moved dx px right and dy px down, zeros coming in (the pad-and-crop of the seeds)."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
    return padded[:, 2 - dy:2 - dy + height, 2 - dx:2 - dx + width]


def test_shift_of_zero_is_the_identity():
    images = ramp()
    assert random_shift(images, 0) is images


def test_flip_mirrors_about_half_the_images_left_to_right():
    torch.manual_seed(0)
    images = ramp(batch=400)
    flipped = random_horizontal_flip(images)
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images)]
    kept = [torch.equal(f, i) for f, i in zip(flipped, images)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image either mirrored or untouched
    assert 150 < sum(mirrored) < 250
    assert torch.equal(flipped[mirrored.index(True)][0, 0], images[mirrored.index(True)][0, 0].flip(0))


def test_augmentation_runs_on_the_batch_device_in_uint8_scaled_batches():
    images = (ramp() * 255).to(torch.uint8).float().div_(255)
    out = random_horizontal_flip(random_shift(images, 4))
    assert out.device == images.device and out.shape == images.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
