"""`stride stylize`: iterative neural style transfer of one image (docs/stylization.md, "Iterative transfer").

Everything a user can get wrong (options, layers, the weights file, the images, the tracking store) is checked
before the first optimisation step. The run writes DIR/stylized.png, DIR/snapshots/step_NNNNN.png, the loss
curves and a grid figure (content | style(s) | result) into DIR and, unless --no-track, logs the options, the
loss parts per step, the final `style_ratio` and those pictures to an MLflow run.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stride.errors import StrideError
from stride.pipelines.arguments import (
    add_tracking_argument,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
)

if TYPE_CHECKING:  # the heavy imports happen in the handler, so `stride --help` stays fast
    import torch
    from mlflow.tracking import MlflowClient

    from stride.lightning_modules.iterative_stylization import IterativeResult

# the scikit-image photographs a user can name instead of a file
CONTENT_BUILTINS = ("astronaut", "chelsea", "coffee", "rocket")
# stride's choice, for random filters: the built-in example (astronaut in brick or stain, 256 px, 200 Adam steps)
# visibly takes the style's colours and grain with the content still recognisable. ImageNet weights give features
# of another scale: tune it for them (docs/stylization.md, "Iterative transfer")
DEFAULT_STYLE_WEIGHT = 100.0
METRICS = {"total": "loss", "content": "content_loss", "style": "style_loss", "tv": "tv_loss"}  # history -> MLflow
METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call
IMAGE_NAME = "stylized.png"
SNAPSHOTS = "snapshots"
CURVES_NAME, GRID_NAME = "loss_curves.png", "grid.png"


def register(commands: argparse._SubParsersAction) -> None:
    from stride.lightning_modules.iterative_stylization import (
        DEFAULT_LR,
        INITS,
        METHOD_CONTENT_LAYERS,
        METHOD_NETWORK,
        METHOD_STYLE_LAYERS,
        OPTIMIZERS,
    )

    parser = commands.add_parser(
        "stylize", help="iterative neural style transfer of one image (Gatys et al. 2016)",
        description="Optimises the pixels of an image so that its loss-network features match the content image "
                    "and its Gram matrices match the style image(s) (eq. 5.10). IMG is a file (content: PNG, JPEG or "
                    "TIFF; style: also BMP or WebP) or a built-in: content "
                    f"{', '.join(CONTENT_BUILTINS)}; style {', '.join(style_builtins())}. "
                    "Without --loss-weights the loss network keeps seeded random filters (no ImageNet weights are "
                    "downloaded), which transfer colours and texture but less structure.")
    parser.add_argument("--content", required=True, metavar="IMG", help="the content image (file or built-in)")
    parser.add_argument("--style", required=True, action="append", metavar="IMG",
                        help="a style image (file or built-in); repeat for a blend of styles")
    parser.add_argument("--style-weights", metavar="W1,W2,...",
                        help="one weight per --style, scaled to sum to 1 (default: equal)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for stylized.png, the snapshots and "
                        "the figures (made if missing)")
    parser.add_argument("--steps", type=positive_int, default=300, help="optimiser steps (default 300)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="adam (default) or lbfgs (the original paper's, with a strong-Wolfe line search)")
    parser.add_argument("--lr", type=positive_number, help="learning rate (default: " + ", ".join(
        f"{name} {lr:g}" for name, lr in DEFAULT_LR.items()) + "; Adam's in pixel units)")
    parser.add_argument("--content-weight", type=non_negative_number, default=1.0,
                        help="lambda_c of eq. 5.10 (default 1)")
    parser.add_argument("--style-weight", type=non_negative_number, default=DEFAULT_STYLE_WEIGHT,
                        help=f"lambda_s of eq. 5.10 (default {DEFAULT_STYLE_WEIGHT:g})")
    parser.add_argument("--tv-weight", type=non_negative_number, default=0.0,
                        help="lambda_tv of eq. 5.10, smooths the image (default 0)")
    parser.add_argument("--loss-network", default=METHOD_NETWORK, metavar="vgg16|vgg19",
                        help=f"the loss network (default {METHOD_NETWORK}, as in sec. 5.3.2)")
    parser.add_argument("--loss-weights", metavar="FILE", help="torchvision's ImageNet state dict of the loss "
                        "network (e.g. vgg19-dcbb9e9d.pth); default: seeded random filters")
    parser.add_argument("--loss-network-width", type=positive_number, default=1.0,
                        help="channel multiplier of a random-filter loss network (default 1; 0.25 is fast)")
    parser.add_argument("--content-layers", default=layer_text(METHOD_CONTENT_LAYERS), metavar="LAYER[:W],...",
                        help=f"content layers, optionally weighted (default {layer_text(METHOD_CONTENT_LAYERS)})")
    parser.add_argument("--style-layers", default=layer_text(METHOD_STYLE_LAYERS), metavar="LAYER[:W],...",
                        help=f"style layers, optionally weighted (default {layer_text(METHOD_STYLE_LAYERS)})")
    parser.add_argument("--size", type=positive_int, default=256,
                        help="longer side of the result in pixels; the content image's aspect is kept (default 256)")
    parser.add_argument("--style-size", type=positive_int,
                        help="longer side the style images are shrunk to (never enlarged): the scale of their "
                             "patterns (default --size)")
    parser.add_argument("--init", choices=INITS, default="content",
                        help="start from the content image (default) or from Gaussian noise")
    parser.add_argument("--snapshot-every", type=non_negative_int, default=50,
                        help="save the image every this many steps (default 50; 0: no snapshots)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the random filters and the noise (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to optimise (default: a GPU if there is one)")
    parser.add_argument("--max-pixels", type=positive_int, default=50_000_000,
                        help="refuse image files larger than this many pixels, from their header (default "
                             "50,000,000)")
    add_tracking_argument(parser)
    parser.add_argument("--experiment", default="stylize", help="MLflow experiment (default stylize)")
    parser.add_argument("--no-track", action="store_true", help="write the files only, no MLflow run")
    parser.set_defaults(handler=run)


# -- the images -------------------------------------------------------------------------------------------------

@dataclass
class InputImage:
    name: str  # the built-in's name, or the file's name (never its folder: it may hold a user name)
    pixels: torch.Tensor  # 3 x H x W in [0, 1]
    sha256: str | None = None  # of a file


def style_builtins() -> list[str]:
    from stride.datamodules.sources.style_images import BUILTIN_STYLES

    return list(BUILTIN_STYLES)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_content(text: str, longer_side: int, max_pixels: int) -> InputImage:
    """A built-in photograph or an image file (read as `stride predict` reads one) as 3 x H x W in [0, 1], scaled
    (aspect kept, enlarged too) so that its longer side is `longer_side`. A built-in's name means the built-in
    (write ./astronaut for a file of that name)."""
    import numpy as np
    import torch
    from PIL import Image

    from stride.datamodules.sources.patches import PHOTOGRAPHS, read_photograph
    from stride.serving.image_input import image_size, read_image

    def shape(width: int, height: int) -> tuple[int, int, int]:
        scale = longer_side / max(width, height)
        return 3, max(1, round(height * scale)), max(1, round(width * scale))

    builtins = {photograph.name: photograph for photograph in PHOTOGRAPHS if photograph.name in CONTENT_BUILTINS}
    if text in builtins:
        photograph = read_photograph(builtins[text], "RGB")
        _, height, width = shape(*photograph.size)
        resized = photograph.resize((width, height), Image.Resampling.BILINEAR)  # as read_image resizes a file
        return InputImage(text, torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1))
    path = Path(text).expanduser()
    if not path.is_file():
        raise StrideError(f"--content {text!r} is neither a built-in content image ({', '.join(CONTENT_BUILTINS)}) "
                          "nor an image file" + (" (it is a folder)" if path.is_dir() else ""))
    pixels = read_image(path, shape(*image_size(path, max_pixels)), max_pixels)
    return InputImage(path.name, torch.from_numpy(pixels), file_digest(path))


def read_style(text: str, longer_side: int, max_pixels: int) -> InputImage:
    """A built-in style or an image file, read as a stylization dataset reads its styles (shrunk, never enlarged,
    so that its longer side is at most `longer_side`; a grey texture as three equal channels)."""
    import torch

    from stride.datamodules.sources.style_images import BUILTIN_STYLES, load_styles
    from stride.serving.image_input import image_size, is_image_file

    path = Path(text).expanduser()
    if text not in BUILTIN_STYLES and is_image_file(path) and path.is_file():
        image_size(path, max_pixels)  # the --max-pixels guard, from the header, before decoding
    style = load_styles(text, longer_side)[0]
    pixels = torch.from_numpy(style.pixels.copy()).permute(2, 0, 1).float() / 255
    return InputImage(text if text in BUILTIN_STYLES else path.name, pixels,
                      None if text in BUILTIN_STYLES else file_digest(path))


def check_side(image: InputImage, option: str, layers: list[str]) -> None:
    """The loss network halves the image before each block after the first: layer convB_N needs 2^(B-1) pixels
    on the shorter side."""
    needed = 2 ** (max(int(name.removeprefix("conv").split("_")[0]) for name in layers) - 1)
    height, width = image.pixels.shape[1:]
    if min(height, width) < needed:
        raise StrideError(f"{image.name} is {width} x {height} px at this {option}; the loss layers "
                          f"({', '.join(layers)}) need at least {needed} px on the shorter side: raise {option}")


def save_png(image: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    pixels = (image.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(pixels, "RGB").save(path, format="PNG")
    return path


# -- the options ------------------------------------------------------------------------------------------------

def layer_text(layers: dict[str, float]) -> str:
    return ",".join(name if weight == 1 else f"{name}:{weight:g}" for name, weight in layers.items())


def parse_layers(text: str, option: str) -> dict[str, float]:
    """`conv4_2` or `conv1_1:0.5,conv2_1` -> {name: weight}; the loss network checks the names."""
    layers: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise StrideError(f"{option} {text!r}: layer weight {weight!r} of {name!r} is not a finite number > 0")
        layers[name] = value
    if not layers:
        raise StrideError(f"{option}: give at least one layer, e.g. conv4_2")
    return layers


def parse_style_weights(text: str | None, count: int) -> list[float] | None:
    from stride.lightning_modules.iterative_stylization import style_mixture

    if text is None:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise StrideError(f"--style-weights {text!r}: expected numbers separated by commas, e.g. 0.7,0.3") from None
    try:
        style_mixture(weights, count)
    except StrideError as err:
        raise StrideError(f"--style-weights {text!r}: {err}") from None
    return weights


def pick_device(choice: str) -> torch.device:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise StrideError("--device cuda: no GPU is visible to this process")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


# -- the command ------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from stride.hardware import device_description
    from stride.lightning_modules.iterative_stylization import IterativeSettings, method_weights, stylize
    from stride.lightning_modules.perceptual import LossNetwork, LossNetworkSpec, PerceptualLoss
    from stride.names import inside, output_folder
    from stride.stylization_plots import plot_side_by_side, plot_step_curves

    # every check before the first step: options, loss network (layers, weights file), images, tracking store
    out = output_folder(args.out, "--out")
    settings = IterativeSettings(steps=args.steps, optimizer=args.optimizer, lr=args.lr, init=args.init,
                                 snapshot_every=args.snapshot_every, seed=args.seed)
    style_weights = parse_style_weights(args.style_weights, len(args.style))
    weights = method_weights(args.content_weight, args.style_weight, args.tv_weight,
                             parse_layers(args.content_layers, "--content-layers"),
                             parse_layers(args.style_layers, "--style-layers"))
    device = pick_device(args.device)
    spec = LossNetworkSpec(args.loss_network, args.loss_weights, args.seed, args.loss_network_width)
    network = LossNetwork(spec, weights.layers)
    content = read_content(args.content, args.size, args.max_pixels)
    styles = [read_style(text, args.style_size or args.size, args.max_pixels) for text in args.style]
    for loaded, option in ((content, "--size"), *((style, "--style-size") for style in styles)):
        check_side(loaded, option, weights.layers)
    params = run_params(args, settings, content, styles, style_weights, network, device_description(device))

    run_name = f"{content.name} in {' + '.join(s.name for s in styles)}"
    with tracked_run(not args.no_track, args.tracking_uri, args.experiment, run_name, params) as tracker:
        started = time.perf_counter()
        result = stylize(PerceptualLoss(network, weights), content.pixels, [s.pixels for s in styles], settings,
                         style_weights, device=device, on_step=tracker.log_step if tracker else None, progress=True)
        elapsed_s = time.perf_counter() - started
        out.mkdir(parents=True, exist_ok=True)
        image = save_png(result.image, inside(out, out / IMAGE_NAME))
        snapshots = write_snapshots(result, out)
        curves = plot_step_curves(result.history, METRICS, inside(out, out / CURVES_NAME))
        grid = plot_side_by_side(grid_panels(content, styles, style_weights, result), inside(out, out / GRID_NAME))
        if tracker:
            tracker.finish(result, elapsed_s, image, snapshots, [curves, grid])
    print(f"stylized image: {image} ({result.image.shape[2]} x {result.image.shape[1]} px, {settings.steps} steps "
          f"in {elapsed_s:.1f} s, style_ratio {result.style_ratio:.4f})")
    if tracker:
        from stride.tracking.store import ui_hint

        print(f"MLflow: {ui_hint(tracker.uri, tracker.experiment_id, tracker.run_id)}")
    return 0


def run_params(args: argparse.Namespace, settings: Any, content: InputImage, styles: list[InputImage],
               style_weights: list[float] | None, network: Any, device: str) -> dict[str, str]:
    """Every option, with images and the weights file by name and sha256 (their folders may hold user names)."""
    from stride.lightning_modules.iterative_stylization import style_mixture

    params: dict[str, Any] = {
        "content": content.name, "content_sha256": content.sha256,
        "content_px": f"{content.pixels.shape[2]}x{content.pixels.shape[1]}",
        **{f"style.{i}": style.name for i, style in enumerate(styles)},
        **{f"style.{i}.sha256": style.sha256 for i, style in enumerate(styles)},
        "style_weights": ",".join(f"{w:.4g}" for w in style_mixture(style_weights, len(styles))[0].tolist()),
        "steps": settings.steps, "optimizer": settings.optimizer,
        "lr": settings.learning_rate, "content_weight": args.content_weight, "style_weight": args.style_weight,
        "tv_weight": args.tv_weight, "content_layers": args.content_layers, "style_layers": args.style_layers,
        "size": args.size, "style_size": args.style_size or args.size, "init": settings.init,
        "snapshot_every": settings.snapshot_every, "seed": args.seed, "device": device,
        "loss.network": network.description(), "loss.architecture": args.loss_network,
        "loss.network_width": args.loss_network_width,
        "loss.weights": Path(args.loss_weights).name if args.loss_weights else None,
        "loss.weights_sha256": network.weights_sha256,
    }
    return {key: str(value) for key, value in params.items() if value is not None}


def write_snapshots(result: IterativeResult, out: Path) -> list[Path]:
    from stride.names import inside, safe_filename

    folder = inside(out, out / SNAPSHOTS)
    if result.snapshots:
        folder.mkdir(exist_ok=True)
    return [save_png(image, inside(out, folder / safe_filename(f"step_{step:05d}.png")))
            for step, image in result.snapshots]


# -- the figures ------------------------------------------------------------------------------------------------

def grid_panels(content: InputImage, styles: list[InputImage], style_weights: list[float] | None,
                result: IterativeResult) -> list[tuple[Any, str]]:
    """content | style(s) | result, with their titles."""
    from stride.lightning_modules.iterative_stylization import style_mixture

    mixture = style_mixture(style_weights, len(styles))[0].tolist()
    panels = [(content.pixels, f"content: {content.name}")]
    panels += [(s.pixels, f"style: {s.name}" + (f" ({w:.2g})" if len(styles) > 1 else ""))
               for s, w in zip(styles, mixture)]
    panels.append((result.image, f"result (style ratio {result.style_ratio:.3g})"))
    return panels


# -- tracking ---------------------------------------------------------------------------------------------------

class StylizeRun:
    """An open MLflow run of one `stride stylize`: the loss parts as they come, the pictures at the end."""

    def __init__(self, uri: str, experiment_id: str, run_id: str, client: MlflowClient):
        self.uri, self.experiment_id, self.run_id, self.client = uri, experiment_id, run_id, client
        self.pending: list[Any] = []

    def log_step(self, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(metric, row[part], now, int(row["step"])) for part, metric in METRICS.items()]
        if len(self.pending) + len(METRICS) > METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []

    def finish(self, result: IterativeResult, elapsed_s: float, image: Path, snapshots: list[Path],
               plots: list[Path]) -> None:
        from stride.tracking.contract import PLOTS_FOLDER, WALL_TIME_METRIC

        self.flush()
        for key, value in (("style_ratio", result.style_ratio), ("content_image_style_loss",
                                                                  result.content_style_loss),
                           (WALL_TIME_METRIC, round(elapsed_s, 3))):
            self.client.log_metric(self.run_id, key, value, step=len(result.history) - 1)
        self.client.log_artifact(self.run_id, str(image))
        for path in snapshots:
            self.client.log_artifact(self.run_id, str(path), SNAPSHOTS)
        for path in plots:
            self.client.log_artifact(self.run_id, str(path), PLOTS_FOLDER)


@contextmanager
def tracked_run(track: bool, tracking_uri: str | None, experiment: str, run_name: str,
                params: dict[str, str]) -> Iterator[StylizeRun | None]:
    """An MLflow run (None if not `track`), ended FINISHED, KILLED (interrupted) or FAILED as the block ends."""
    if not track:
        yield None
        return
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from stride import __version__
    from stride.tracking.contract import GIT_COMMIT_TAG, VERSION_TAG
    from stride.tracking.run import fail_dead_runs, git_commit, process_tags
    from stride.tracking.store import ensure_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(uri, experiment)  # checks an HTTP server answers
    client = MlflowClient(uri)
    fail_dead_runs(client, experiment_id)
    tags = {VERSION_TAG: __version__, **process_tags()}
    if commit := git_commit():
        tags[GIT_COMMIT_TAG] = commit
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    status = "FAILED"
    try:
        client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
        yield StylizeRun(uri, experiment_id, run_id, client)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"  # stopped is not failed
        raise
    finally:
        try:
            client.set_terminated(run_id, status)
        except Exception:  # the tracking server may be what failed; the original error matters more
            if status == "FINISHED":
                raise
