"""`stride data prepare NAME`: raw or built-in data -> sharded WebDataset + manifest."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from stride.datamodules.image_shards import ENCODINGS
from stride.datamodules.location import S3Prefix, dataset_location
from stride.datamodules.sources.cifar import DATASETS as CIFAR
from stride.datamodules.sources.mnist_idx import DATASETS as MNIST_LIKE
from stride.errors import StrideError
from stride.pipelines.arguments import non_negative_int, open_fraction, positive_int

BUILTIN = ("digits", "patches", "faces", "shapes-captions", "digits-heldout", "photos")
USER_FILES = ("sequences", "identity-folders", "image-folder")
OFFICIAL_FILES = (*MNIST_LIKE, *CIFAR, "svhn", "wider-face", "coco-captions", "lfw", "coco-images")  # need --source
STYLIZATION = ("photos", "image-folder", "coco-images")  # content images + style images (--styles)
SOURCE_HINTS = {"sequences": "FILE.npz", "identity-folders": "DIR of <identity>/ image folders",
                "image-folder": "DIR of .jpg/.png images (searched recursively)"}


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    parser = data.add_parser("prepare", help="convert a dataset to WebDataset shards with a manifest")
    add_arguments(parser)
    parser.set_defaults(handler=run)
    copy = data.add_parser("copy", help="copy a prepared dataset between folders and s3:// buckets, checking every "
                           "shard's sha256")
    copy.add_argument("source", help="dataset folder or s3://BUCKET/PREFIX")
    copy.add_argument("target", help="dataset folder or s3://BUCKET/PREFIX")
    copy.add_argument("--overwrite", action="store_true", help="replace a dataset at the target (it stays complete "
                      "until the copy is)")
    copy.set_defaults(handler=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    from stride.datamodules.transfer import copy_dataset

    manifest = copy_dataset(args.source, args.target, overwrite=args.overwrite)
    shards = sum(len(split.shards) for split in manifest.splits.values())
    print(f"copied {manifest.dataset} ({shards} shards, sha256 checked) from {args.source} to {args.target}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=[*BUILTIN, *OFFICIAL_FILES, *USER_FILES], help="which dataset to convert")
    parser.add_argument("--source", help="folder with the official raw files (MNIST-format, CIFAR, SVHN), an "
                        "official CIFAR .tar.gz, or the .npz file of labelled sequences (sequences); image-folder: "
                        "a folder of .jpg/.png images; coco-images: the folder holding train2014/ and val2014/ "
                        "(or the 2017 names)")
    parser.add_argument("--out", required=True, help="output dataset folder (shards + manifest.json), or "
                        "s3://BUCKET/PREFIX: prepared in a temporary folder, then uploaded, the manifest last")
    parser.add_argument("--val-size", type=positive_int, help="validation images split off the training set "
                        "(default: 5000 for MNIST-format, CIFAR and coco-captions, 6000 for SVHN, 180 for digits, "
                        "1000 for "
                        "patches and wider-face, 40 for faces, 250 for shapes-captions, 48 for photos, 10%% of the "
                        "images for image-folder, 500 of val2014/ for coco-images)")
    parser.add_argument("--test-size", type=positive_int, help="test images (digits: default 360; patches: 1000; "
                        "photos: 48; image-folder: 10%% of the images; coco-images: 500 other images of val2014/)")
    parser.add_argument("--train-size", type=positive_int,
                        help="training images (patches: default 5000; photos: 480)")
    parser.add_argument("--label-set", choices=("fine", "coarse"), help="cifar100: the 100 fine classes (default) "
                        "or the 20 coarse superclasses")
    parser.add_argument("--svhn-extra", action="store_true", help="svhn: add extra_32x32.mat to the training split")
    parser.add_argument("--image-size", type=positive_int, help="digits, digits-heldout: side in pixels (default 28 "
                        "like MNIST; 8 keeps the native resolution, 64-step sequences); lfw, identity-folders: side "
                        "of the stored faces (default 64); photos, image-folder, coco-images: side of the square "
                        "content images (default 96 for photos, 256 otherwise, as the dissertation trains)")
    parser.add_argument("--styles", help="photos, image-folder, coco-images: comma-separated style images, each a "
                        "built-in style (brick, grass, gravel, stain) or an image file (default: "
                        "brick,grass,gravel,stain)")
    parser.add_argument("--style-size", type=positive_int, help="photos, image-folder, coco-images: longest side "
                        "of the stored style images; smaller ones are kept as they are (default 256)")
    parser.add_argument("--val-fraction", type=open_fraction, default=0.1, help="sequences: validation share when the "
                        "file has no explicit splits; lfw, identity-folders: share of the identities")
    parser.add_argument("--test-fraction", type=open_fraction, default=0.2, help="sequences: test share likewise; "
                        "identity-folders: share of the identities")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the deterministic splits")
    parser.add_argument("--shard-size", type=positive_int, default=5000, help="samples per shard")
    parser.add_argument("--encoding", choices=ENCODINGS, default="png",
                        help="png: small; npy: fastest to decode")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("--labels", help="wider-face: RetinaFace-style label.txt (or a folder of them) adding "
                        "five landmarks per face")
    parser.add_argument("--raw-out", help="faces, shapes-captions: also keep the generated raw files there (WIDER "
                        "FACE layout with _bbx_gt.txt and evaluation .mat files; COCO captions layout)")
    parser.add_argument("--karpathy-split", help="coco-captions: Karpathy's dataset_coco.json decides the splits "
                        "(train + restval, val, test) instead of the official train/val files")
    parser.add_argument("--min-count", type=non_negative_int, default=5, help="coco-captions, shapes-captions: keep "
                        "words seen more than this many times in the training captions (default 5, as in the study)")
    parser.add_argument("--download", action="store_true",
                        help="fetch the official files into --source first (needs network)")


def _sequences(args: argparse.Namespace, common: dict):
    from stride.datamodules.sequence_shards import prepare_sequences

    return prepare_sequences(args.source, args.out, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                             seed=args.seed, samples_per_shard=args.shard_size, overwrite=args.overwrite)


def _digits(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.digits import prepare_digits

    return prepare_digits(args.out, val_size=args.val_size or 180, test_size=args.test_size or 360,
                          size_px=args.image_size or 28, **common)


def _patches(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.patches import prepare_patches

    return prepare_patches(args.out, train_size=args.train_size or 5000, val_size=args.val_size or 1000,
                           test_size=args.test_size or 1000, **common)


def _mnist_like(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.mnist_idx import prepare_mnist_like

    return prepare_mnist_like(args.dataset, args.source, args.out, val_size=args.val_size or 5000,
                              fetch=args.download, **common)


def _cifar(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.cifar import prepare_cifar

    return prepare_cifar(args.dataset, args.source, args.out, label_set=args.label_set,
                         val_size=args.val_size or 5000, fetch=args.download, **common)


def _svhn(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.svhn import prepare_svhn

    return prepare_svhn(args.source, args.out, val_size=args.val_size or 6000, extra=args.svhn_extra,
                        fetch=args.download, **common)


def _faces(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.faces import prepare_faces

    return prepare_faces(args.out, seed=args.seed, val_size=args.val_size or 40, samples_per_shard=args.shard_size,
                         overwrite=args.overwrite, raw_dir=args.raw_out)


def _wider_face(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.wider_face import prepare_wider_face

    return prepare_wider_face(args.source, args.out, val_size=args.val_size or 1000, seed=args.seed,
                              samples_per_shard=args.shard_size, overwrite=args.overwrite, labels=args.labels)


def _shapes_captions(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.shapes_captions import prepare_shapes_captions

    return prepare_shapes_captions(args.out, seed=args.seed, val_size=args.val_size or 250,
                                   samples_per_shard=args.shard_size, overwrite=args.overwrite, raw_dir=args.raw_out,
                                   min_count=args.min_count)


def _coco_captions(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.coco_captions import prepare_coco_captions

    return prepare_coco_captions(args.source, args.out, karpathy_split=args.karpathy_split,
                                 val_size=args.val_size or 5000, seed=args.seed, min_count=args.min_count,
                                 samples_per_shard=args.shard_size, overwrite=args.overwrite)


def _digits_heldout(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.held_out_digits import prepare_held_out_digits

    return prepare_held_out_digits(args.out, size_px=args.image_size or 28, **common)


def _lfw(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.lfw import prepare_lfw

    return prepare_lfw(args.source, args.out, size_px=args.image_size or 64, val_fraction=args.val_fraction,
                       **common)


def _identity_folders(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.identity_folders import prepare_identity_folders

    return prepare_identity_folders(args.source, args.out, size_px=args.image_size or 64,
                                    val_fraction=args.val_fraction, test_fraction=args.test_fraction, **common)


def _stylization_options(args: argparse.Namespace, common: dict) -> dict:
    from stride.datamodules.sources.style_images import DEFAULT_STYLES, STYLE_SIZE_PX

    return dict(styles=args.styles or DEFAULT_STYLES, style_size=args.style_size or STYLE_SIZE_PX,
                val_size=args.val_size, test_size=args.test_size, **common)


def _photos(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.content_images import BUILTIN_SIZE_PX, prepare_photos

    options = {**_stylization_options(args, common), "val_size": args.val_size or 48, "test_size": args.test_size or 48}
    return prepare_photos(args.out, image_size=args.image_size or BUILTIN_SIZE_PX, train_size=args.train_size or 480,
                          **options)


def _image_folder(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.content_images import CONTENT_SIZE_PX, prepare_image_folder

    return prepare_image_folder(args.source, args.out, image_size=args.image_size or CONTENT_SIZE_PX,
                                **_stylization_options(args, common))


def _coco_images(args: argparse.Namespace, common: dict):
    from stride.datamodules.sources.content_images import CONTENT_SIZE_PX, prepare_coco_images

    return prepare_coco_images(args.source, args.out, image_size=args.image_size or CONTENT_SIZE_PX,
                               **_stylization_options(args, common))


PREPARERS = {"faces": _faces, "wider-face": _wider_face, "shapes-captions": _shapes_captions,
             "coco-captions": _coco_captions, "sequences": _sequences, "digits": _digits, "patches": _patches,
             "svhn": _svhn, "digits-heldout": _digits_heldout, "lfw": _lfw, "identity-folders": _identity_folders,
             "photos": _photos, "image-folder": _image_folder, "coco-images": _coco_images,
             **dict.fromkeys(MNIST_LIKE, _mnist_like), **dict.fromkeys(CIFAR, _cifar)}


def run(args: argparse.Namespace) -> int:
    common = dict(seed=args.seed, encoding=args.encoding, samples_per_shard=args.shard_size, overwrite=args.overwrite)
    if args.dataset in USER_FILES and not args.source:
        raise StrideError(f"stride data prepare {args.dataset} needs --source {SOURCE_HINTS[args.dataset]}")
    if args.dataset in OFFICIAL_FILES and not args.source:
        raise StrideError(f"stride data prepare {args.dataset} needs --source DIR holding the official files "
                          "(docs/datasets.md)")
    if args.label_set and args.dataset != "cifar100":
        raise StrideError(f"--label-set is for cifar100; {args.dataset} has one set of labels")
    if args.labels and args.dataset != "wider-face":
        raise StrideError(f"--labels is for wider-face, not {args.dataset}")
    if args.raw_out and args.dataset not in ("faces", "shapes-captions"):
        raise StrideError(f"--raw-out is for faces and shapes-captions, not {args.dataset}")
    if args.karpathy_split and args.dataset != "coco-captions":
        raise StrideError(f"--karpathy-split is for coco-captions, not {args.dataset}")
    for given, option in ((args.styles, "--styles"), (args.style_size, "--style-size")):
        if given is not None and args.dataset not in STYLIZATION:
            raise StrideError(f"{option} is for {', '.join(STYLIZATION)}, not {args.dataset}")
    if args.train_size is not None and args.dataset not in ("patches", "photos"):
        raise StrideError(f"--train-size is for patches and photos, not {args.dataset}")
    target = dataset_location(args.out)  # an unsupported URI scheme fails here, before any work
    if isinstance(target, S3Prefix):
        manifest = _prepare_into_bucket(args, common, target)
    else:
        manifest = PREPARERS[args.dataset](args, common)
    sizes = ", ".join(f"{name} {split.num_samples}" for name, split in manifest.splits.items())
    print(f"wrote {args.out}: {manifest.dataset} ({sizes}; {sum(len(s.shards) for s in manifest.splits.values())} "
          f"shards)")
    if note := validation_share_note(manifest):
        print(note)
    return 0


def _prepare_into_bucket(args: argparse.Namespace, common: dict, target: S3Prefix):
    """Prepare in a temporary folder, then upload (datamodules/transfer.py: the manifest is the commit point)."""
    from stride.datamodules.transfer import check_bucket_target, upload_dataset

    check_bucket_target(target, args.overwrite)  # reachable, and no dataset to keep, before the work starts
    with tempfile.TemporaryDirectory(prefix="stride-prepare-") as staging:
        folder = Path(staging) / "dataset"
        local_args = argparse.Namespace(**{**vars(args), "out": str(folder), "overwrite": False})
        PREPARERS[args.dataset](local_args, {**common, "overwrite": False})
        return upload_dataset(folder, target, overwrite=args.overwrite)


SENSIBLE_VAL_SHARE = 0.2


def validation_share_note(manifest) -> str | None:
    """A warning when the validation split takes a large share of what could have been trained on."""
    train, val = manifest.splits["train"].num_samples, manifest.splits["val"].num_samples
    share = val / max(1, train + val)
    if share <= SENSIBLE_VAL_SHARE:
        return None
    return (f"warning: validation holds {val} of {train + val} training samples ({share:.0%}), leaving {train} to "
            f"train on; lower --val-size (about {int(SENSIBLE_VAL_SHARE * (train + val))} "
            f"keeps {SENSIBLE_VAL_SHARE:.0%})")
