"""`stride explain`: class activation maps and weakly supervised boxes for image files (docs/explain.md).

The logged MLflow model is a torch.export program that returns probabilities only, so the
network is rebuilt from the weights-only checkpoint its run logged beside it
(`weights/module.pt`), or from a local checkpoint; the registered model itself then checks
that the rebuilt network predicts what it predicts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stride.errors import StrideError
from stride.pipelines.arguments import add_image_output_arguments, positive_int, unit_interval

if TYPE_CHECKING:  # the heavy imports happen in the handler, so `stride --help` stays fast
    import torch

EXPLAIN_BATCH = 64  # files per forward pass
PROBABILITY_TOLERANCE = 1e-4  # rebuilt network vs the logged model, same weights


@dataclass
class ExplainedFile:
    file: str
    picture: str  # the PNG written
    top_k: list[tuple[str, float, tuple[int, int, int, int]]]  # class, probability, box (x0, y0, x1, y1)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "picture": self.picture,
                "top_k": [{"class": name, "probability": p, "box": list(box)} for name, p, box in self.top_k]}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain", help="class activation maps and weakly supervised boxes for image (PNG/JPEG/TIFF) or .npy files",
        description="For networks whose scores are a global average pool of feature maps followed by one linear "
                    "layer, or a class convolution + global average pool: writes one PNG per file with the map of "
                    "each of the top classes over the image (read as `stride predict` reads it) and the smallest "
                    "box around the map's pixels above --threshold. Boxes are in the model's input pixels.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="models:/NAME@champion, models:/NAME/VERSION, models:/m-<id> or "
                                        "runs:/RUN_ID/model (its run must have logged weights/module.pt)")
    source.add_argument("--checkpoint", help="a stride checkpoint (.ckpt) instead of a logged model")
    parser.add_argument("--top-k", type=positive_int, default=3,
                        help="how many of the most probable classes to map (default 3)")
    parser.add_argument("--threshold", type=unit_interval,
                        help="box the pixels whose min-max normalised map is at least this (default 0.2, as in Zhou et "
                             "al. 2016)")
    parser.add_argument("--out", default="cams", help="folder for the PNGs (default ./cams)")
    add_image_output_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.names import output_folder
    from stride.tasks.cam import DEFAULT_THRESHOLD
    from stride.text_table import align_columns

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if args.top_k < 1:
        raise StrideError(f"--top-k must be at least 1, got {args.top_k}")
    output_folder(args.out, "--out")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            checkpoint, reference = logged_module(args.model, args.tracking_uri, Path(tmp))
        else:
            checkpoint, reference = Path(args.checkpoint), None
        rows = explain_files(checkpoint, args.files, Path(args.out), top_k=args.top_k, threshold=threshold,
                             max_pixels=args.max_pixels, reference=reference)
    if args.json:
        print(json.dumps({"model": args.model or args.checkpoint, "threshold": threshold,
                          "explanations": [r.as_dict() for r in rows]}, indent=2))
    else:
        print(align_columns([("file", "picture", "class", "probability", "box x0,y0,x1,y1")] + [
            (r.file if rank == 0 else "", r.picture if rank == 0 else "", name, f"{p:.4f}", ",".join(map(str, box)))
            for r in rows for rank, (name, p, box) in enumerate(r.top_k)]))
    return 0


def logged_module(model_uri: str, tracking_uri: str | None,
                  folder: Path) -> tuple[Path, Callable[[torch.Tensor], torch.Tensor]]:
    """The weights-only checkpoint logged with `model_uri`'s run, and the logged model (to check it against)."""
    from stride.registry.client import connect
    from stride.registry.references import describe_model, download_module, load_network

    client = connect(tracking_uri)
    ref = describe_model(client, model_uri)
    return download_module(client, ref, folder), load_network(ref)


def explain_files(checkpoint: Path, files: list[str], out: Path, *, top_k: int, threshold: float,
                  max_pixels: int, reference: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> list[ExplainedFile]:
    """Read every file (all checked first), map the top classes, write `out/<file stem>_cam.png` each."""
    import torch

    from stride.architectures.heads import evaluation_mode, find_cam_head
    from stride.cam_plots import CamPanel, plot_cam_panels
    from stride.names import inside, safe_filename
    from stride.registry.prediction import check_file
    from stride.serving import TensorSpec, get_serving
    from stride.tasks import DataFacts, get_task
    from stride.tasks.cam import check_threshold, explain
    from stride.training.checkpoints import load_module

    check_threshold(threshold)
    config, module = load_module(checkpoint)
    task = get_task(config.task)
    if not getattr(task, "class_activation_maps", False):
        raise StrideError(f"{checkpoint}: a {config.task} model; class activation maps are for image classifiers")
    network = cast(torch.nn.Module, module.network)  # the task's backbone, kept as `.network`
    try:
        head = find_cam_head(network)
    except StrideError as err:
        raise StrideError(f"{checkpoint}: architecture {config.model.architecture}: {err}") from None
    facts = DataFacts.from_dict(module.hparams["stride"]["data"])
    names = list(facts.class_names) or [str(i) for i in range(facts.num_classes)]
    serving = get_serving(config.task)
    inputs = torch.stack([torch.from_numpy(serving.read_input(check_file(f), TensorSpec(facts.input_shape),
                                                              max_pixels=max_pixels)) for f in files])
    out.mkdir(parents=True, exist_ok=True)
    rows: list[ExplainedFile] = []
    taken: set[str] = set()
    with evaluation_mode(network), torch.no_grad():
        for start in range(0, len(files), EXPLAIN_BATCH):
            batch = inputs[start:start + EXPLAIN_BATCH]
            seen = explain(head, batch, top_k=top_k, threshold=threshold)
            if reference is not None:
                _check_same_model(reference(batch), seen.probabilities)
            for index, file in enumerate(files[start:start + EXPLAIN_BATCH]):
                ranked = [(names[c], float(seen.probabilities[index, c]), tuple(seen.boxes[index, rank].tolist()))
                          for rank, c in enumerate(seen.classes[index].tolist())]
                panels = [CamPanel(batch[index].numpy(), None, None, Path(file).name[:24])] + [
                    CamPanel(batch[index].numpy(), seen.maps[index, rank].numpy(), box, f"{name} ({p:.2f})")
                    for rank, (name, p, box) in enumerate(ranked)]
                picture = inside(out, out / _unused(f"{safe_filename(Path(file).stem)}_cam", taken))
                plot_cam_panels([("", panels)], picture, f"class activation maps (threshold {threshold:g})")
                rows.append(ExplainedFile(str(file), str(picture), ranked))
    return rows


def _unused(stem: str, taken: set[str]) -> str:
    """`stem.png`, or `stem-2.png`, ... when files of the same name came from different folders."""
    name, copy = f"{stem}.png", 1
    while name in taken:
        copy += 1
        name = f"{stem}-{copy}.png"
    taken.add(name)
    return name


def _check_same_model(logged: torch.Tensor, rebuilt: torch.Tensor) -> None:
    if not (logged - rebuilt).abs().max() <= PROBABILITY_TOLERANCE:
        raise StrideError("the network rebuilt from the run's weights does not predict what the logged model "
                          "predicts (a later training of the same run replaced the weights?); pass the model's own "
                          "checkpoint with --checkpoint PATH")
