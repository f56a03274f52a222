"""The built-in `patches` colour dataset: deterministic, spatially disjoint splits, not separable by colour alone."""

import numpy as np
import pytest
from cifar_files import read_split

from stride.datamodules.sources.patches import PHOTOGRAPHS, band_of, load_photographs, make_patches, region_of

SIZES = {"train": 300, "val": 100, "test": 100}


@pytest.fixture(scope="module")
def photographs():
    return load_photographs()


@pytest.fixture(scope="module")
def patches(photographs):
    return make_patches(SIZES, seed=3, photographs=photographs)


def test_the_photographs_are_the_packages_own_pixels(photographs):
    import skimage.data

    np.testing.assert_array_equal(photographs[1], skimage.data.chelsea())  # read with Pillow, as skimage reads it


def test_same_seed_same_samples_other_seed_others(photographs, patches):
    again = make_patches(SIZES, seed=3, photographs=photographs)
    other = make_patches(SIZES, seed=4, photographs=photographs)
    for split in SIZES:
        np.testing.assert_array_equal(again[split].images, patches[split].images)
        assert not np.array_equal(other[split].images, patches[split].images)
        assert patches[split].images.shape == (SIZES[split], 3, 32, 32)
        assert np.bincount(patches[split].labels).tolist() == [SIZES[split] // 10] * 10  # balanced


def test_splits_crop_from_disjoint_bands_of_each_photograph(photographs, patches):
    for label, (photograph, image) in enumerate(zip(PHOTOGRAPHS, photographs)):
        top, _, bottom, _ = region_of(photograph, image)
        bands = [band_of(region_of(photograph, image), split) for split in SIZES]
        assert all(stop < next_start for (_, stop), (next_start, _) in zip(bands, bands[1:]))  # gaps between them
        for split, (start, stop) in zip(SIZES, bands):
            left, crop_top, side, _ = patches[split].boxes[patches[split].labels == label].T
            assert (left >= start).all() and (left + side <= stop).all(), (photograph.name, split)
            assert (crop_top >= top).all() and (crop_top + side <= bottom).all() and (side >= 24).all()


def test_mean_colour_alone_does_not_identify_the_class(patches):
    """Nearest class-mean colour, fitted on train: far above chance would mean the jitter is too weak."""
    mean_rgb = {split: p.images.mean(axis=(2, 3)) for split, p in patches.items()}
    centres = np.stack([mean_rgb["train"][patches["train"].labels == c].mean(0) for c in range(10)])
    predicted = np.linalg.norm(mean_rgb["test"][:, None] - centres[None], axis=2).argmin(1)
    accuracy = (predicted == patches["test"].labels).mean()
    assert 0.1 < accuracy < 0.5, accuracy


def test_prepare_writes_the_dataset_and_records_how(tmp_path, capsys):
    from stride.pipelines.cli import main

    assert main(["data", "prepare", "patches", "--out", str(tmp_path / "p"), "--train-size", "40", "--val-size", "20",
                 "--test-size", "20", "--seed", "3"]) == 0
    assert "patches (train 40, val 20, test 20" in capsys.readouterr().out
    images, labels = read_split(tmp_path / "p", "test")
    assert images.shape == (20, 3, 32, 32) and sorted(set(labels.tolist())) == list(range(10))
    from stride.datamodules.manifest import read_manifest

    manifest = read_manifest(tmp_path / "p")
    assert manifest.class_names == [photograph.name for photograph in PHOTOGRAPHS]
    assert manifest.source["photographs"][6]["class"] == "retina" and manifest.parameters["seed"] == 3
    assert set(manifest.source["photographs"][0]["bands_px"]) == {"train", "val", "test"}
