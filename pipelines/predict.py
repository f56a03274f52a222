"""`stride predict`: what any logged or registered model says of image or .npy files (its task shows it)."""

from __future__ import annotations

import argparse
import json

from stride.pipelines.arguments import add_image_output_arguments, positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="classes, faces or a caption for image (PNG/JPEG/TIFF) or .npy files",
                                 description="Images of any size are converted as the training data were "
                                             "(grayscale or RGB per the model's channels, resized (letterboxed "
                                             "for detectors) to its H x W, scaled to [0, 1] by their bit depth, "
                                             "transparency over black); .npy arrays must have the model's input "
                                             "shape and finite values.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, "
                                                        "models:/m-<id> or runs:/RUN_ID/model")
    parser.add_argument("--top-k", type=positive_int, default=3, help="how many classes to list per file "
                        "(default 3)")
    parser.add_argument("--beam-size", type=positive_int, help="captioning: decode with a beam search of this width "
                        "(rebuilds the network from the weights its run logged; default: the logged greedy model)")
    parser.add_argument("--style", help="stylization: one style (its name or index) or a blend, one weight per "
                        "style (e.g. 0.7,0.3); rebuilds the network from the weights its run logged (default: every "
                        "style the model has)")
    parser.add_argument("--out", help="detection: write each image with its boxes drawn into this folder; "
                        "stylization: write each stylised image there (FILE-STYLE.png)")
    add_image_output_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.errors import StrideError
    from stride.names import output_folder
    from stride.registry import predict_files

    if args.beam_size is not None and args.beam_size < 1:
        raise StrideError(f"--beam-size must be at least 1, got {args.beam_size}")
    if args.out is not None:
        output_folder(args.out, "--out")
    decoding = {name: value for name, value in (("beam_size", args.beam_size), ("style", args.style))
                if value is not None}
    rows, table = predict_files(args.model, args.files, top_k=args.top_k, tracking_uri=args.tracking_uri,
                                max_pixels=args.max_pixels, pictures=args.out, decoding=decoding or None)
    if args.json:
        print(json.dumps({"model": args.model, "predictions": [r.as_dict() for r in rows]}, indent=2))
    else:
        print(table)
    return 0
