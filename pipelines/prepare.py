"""`stride data prepare NAME`: raw or built-in data -> sharded WebDataset + manifest."""

from __future__ import annotations

import argparse

from stride.datamodules.image_shards import ENCODINGS
from stride.datamodules.sources.mnist_idx import DATASETS as MNIST_LIKE
from stride.errors import StrideError

BUILTIN = ("digits",)
USER_FILES = ("sequences",)


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    parser = data.add_parser("prepare", help="convert a dataset to WebDataset shards with a manifest")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=[*BUILTIN, *MNIST_LIKE, *USER_FILES], help="which dataset to convert")
    parser.add_argument("--source", help="folder with the official raw files (MNIST-format datasets), or the "
                        ".npz file of labelled sequences (sequences)")
    parser.add_argument("--out", required=True, help="output dataset folder (shards + manifest.json)")
    parser.add_argument("--val-size", type=int, help="validation images split off the training set "
                        "(default: 5000 for MNIST-format, 180 for digits)")
    parser.add_argument("--test-size", type=int, default=360, help="test images (digits only; default 360)")
    parser.add_argument("--image-size", type=int, default=28, help="digits only: side in pixels (28 like MNIST; "
                        "8 keeps the native resolution, 64-step sequences)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="sequences: validation share when the "
                        "file has no explicit splits")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="sequences: test share likewise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the deterministic splits")
    parser.add_argument("--shard-size", type=int, default=5000, help="samples per shard")
    parser.add_argument("--encoding", choices=ENCODINGS, default="png",
                        help="png: small; npy: fastest to decode")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("--download", action="store_true",
                        help="fetch the official files into --source first (needs network)")


def run(args: argparse.Namespace) -> int:
    common = dict(seed=args.seed, encoding=args.encoding, samples_per_shard=args.shard_size, overwrite=args.overwrite)
    if args.dataset in USER_FILES and not args.source:
        raise StrideError("stride data prepare sequences needs --source FILE.npz")
    if args.dataset == "sequences":
        from stride.datamodules.sequence_shards import prepare_sequences

        manifest = prepare_sequences(args.source, args.out, val_fraction=args.val_fraction,
                                     test_fraction=args.test_fraction, seed=args.seed,
                                     samples_per_shard=args.shard_size, overwrite=args.overwrite)
    elif args.dataset == "digits":
        from stride.datamodules.sources.digits import prepare_digits

        manifest = prepare_digits(args.out, val_size=args.val_size or 180, test_size=args.test_size,
                                  size_px=args.image_size, **common)
    else:
        if not args.source:
            raise StrideError(f"stride data prepare {args.dataset} needs --source DIR holding the official IDX files")
        from stride.datamodules.sources.mnist_idx import prepare_mnist_like

        manifest = prepare_mnist_like(args.dataset, args.source, args.out, val_size=args.val_size or 5000,
                                      fetch=args.download, **common)
    sizes = ", ".join(f"{name} {split.num_samples}" for name, split in manifest.splits.items())
    print(f"wrote {args.out}: {manifest.dataset} ({sizes}; {sum(len(s.shards) for s in manifest.splits.values())} "
          f"shards)")
    if note := validation_share_note(manifest):
        print(note)
    return 0


SENSIBLE_VAL_SHARE = 0.2


def validation_share_note(manifest) -> str | None:
    """A warning when the validation split takes a large share of what could have been trained on."""
    train, val = manifest.splits["train"].num_samples, manifest.splits["val"].num_samples
    share = val / max(1, train + val)
    if share <= SENSIBLE_VAL_SHARE:
        return None
    return (f"warning: validation holds {val} of {train + val} training samples ({share:.0%}), leaving {train} to "
            f"train on; lower --val-size (about {int(SENSIBLE_VAL_SHARE * (train + val))} keeps {SENSIBLE_VAL_SHARE:.0%})")
