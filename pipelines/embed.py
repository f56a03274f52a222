"""`stride embed`: the embeddings of every image in a folder from an embedding model, as one `.npz` file.

The file holds `embeddings` (N x D float32), `files` (their paths, sorted), and the model's `threshold` and
`distance_order` (docs/embedding.md), so a gallery embedded once can be searched or verified against later.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stride.pipelines.arguments import add_tracking_argument, positive_int

BATCH_SIZE = 256  # images read and embedded at a time: memory stays bounded for large folders


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("embed", help="embeddings of a folder of images from an embedding model")
    parser.add_argument("folder", metavar="FOLDER", help="images (PNG/JPEG/TIFF) or .npy arrays, sub-folders included")
    parser.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, "
                                                        "models:/m-<id> or runs:/RUN_ID/model")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--max-pixels", type=positive_int, default=50_000_000,
                        help="refuse images larger than this many pixels, from their header (default 50,000,000)")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run)


def embed_folder(model_uri: str, folder: str | Path, out: str | Path, *, tracking_uri: str | None = None,
                 max_pixels: int = 50_000_000) -> int:
    """Write the embeddings of `folder`'s files to `out`; return how many were embedded."""
    import numpy as np
    import torch

    from stride.errors import StrideError
    from stride.registry.client import connect
    from stride.registry.references import describe_model, load_network
    from stride.serving import TensorSpec, get_serving
    from stride.serving.embedding import split_outputs
    from stride.serving.image_input import is_image_file

    root, target = Path(folder), Path(out)
    if not root.is_dir():
        raise StrideError(f"{root}: not a folder")
    if target.suffix != ".npz":
        raise StrideError(f"--out {target}: give a .npz file")
    files = sorted(p for p in root.rglob("*") if p.is_file() and (is_image_file(p) or p.suffix.lower() == ".npy"))
    if not files:
        raise StrideError(f"{root}: holds no image or .npy files")
    ref = describe_model(connect(tracking_uri), model_uri)
    if ref.task != "embedding":
        raise StrideError(f"model {model_uri} is a {ref.task} model; stride embed takes embedding models")
    serving, network = get_serving(ref.task), load_network(ref)
    parts = []
    with torch.no_grad():
        for start in range(0, len(files), BATCH_SIZE):
            inputs = np.stack([serving.read_input(f, TensorSpec(ref.input_shape), max_pixels=max_pixels)
                               for f in files[start:start + BATCH_SIZE]])
            parts.append(network(torch.from_numpy(inputs)).numpy())
    embeddings, threshold, order = split_outputs(np.concatenate(parts))
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, embeddings=embeddings.astype(np.float32), files=np.array([str(f) for f in files]),
             threshold=np.float32(threshold), distance_order=np.float32(order), model=np.array(model_uri))
    return len(files)


def run(args: argparse.Namespace) -> int:
    count = embed_folder(args.model, args.folder, args.out, tracking_uri=args.tracking_uri, max_pixels=args.max_pixels)
    print(f"wrote {args.out}: {count} embeddings from {args.folder} ({args.model})")
    return 0
