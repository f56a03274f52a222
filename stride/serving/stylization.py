"""Serving pastiche networks (docs/stylization.md): stylised images of any size, in each of a model's styles or in
a weighted blend of them.

The logged model takes N x 3 x H x W images in [0, 1] of any size and returns N x S x 3 x H x W: every image
in each of its S styles, so one registered version serves all its styles and `stride evaluate` measures
every one. A blend (eq. 5.14) mixes the normalisation parameters, which the logged graph fixes, so
`stride predict --style` rebuilds the network from the weights its run logged (as a captioner's beam search
does) and returns N x 1 x 3 x H x W.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from stride.datamodules.sharded import ShardedDataModule
from stride.datamodules.stylization import StylizationData
from stride.errors import StrideError
from stride.lightning_modules.style_ruler import StyleRuler
from stride.lightning_modules.stylization import StylizationModule, every_style, style_tensors
from stride.names import safe_filename
from stride.serving.base import DEFAULT_MAX_PIXELS, Evaluation, ExportedModel, Serving, TensorSpec, register_serving
from stride.serving.image_input import image_size, read_image
from stride.stylization_plots import plot_style_grid
from stride.tasks import DataFacts
from stride.text_table import align_columns

GRID_CONTENTS = 3
BLEND = "blend"


class EveryStyle(nn.Module):
    """Each image in each of the network's styles: N x S x 3 x H x W, clamped to [0, 1]."""

    def __init__(self, network: nn.Module, styles: int):
        super().__init__()
        self.network, self.styles = network, styles

    def forward(self, images: Tensor) -> Tensor:
        repeated, mixture, _ = every_style(images, self.styles)
        outputs = self.network(repeated, mixture).clamp(0, 1)
        return outputs.reshape(images.shape[0], self.styles, 3, images.shape[2], images.shape[3])


class Blended(nn.Module):
    """Each image in one blend of the styles (eq. 5.14): N x 1 x 3 x H x W."""

    mixture: Tensor  # buffer

    def __init__(self, network: nn.Module, weights: list[float]):
        super().__init__()
        self.network = network
        total = sum(weights)
        self.register_buffer("mixture", torch.tensor([w / total for w in weights], dtype=torch.float32)[None])

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images, self.mixture.expand(images.shape[0], -1)).clamp(0, 1)[:, None]


def style_weights(choice: str, names: list[str]) -> list[float]:
    """`--style`: a style's name or index, or one weight per style (`0.7,0.3`)."""
    if choice in names:
        return [float(name == choice) for name in names]
    parts = [part.strip() for part in choice.split(",")]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise StrideError(f"--style {choice!r}: give a style ({', '.join(names)}), its index (0-{len(names) - 1}) "
                          f"or {len(names)} comma-separated weights") from None
    if len(numbers) == 1 and numbers[0].is_integer() and 0 <= numbers[0] < len(names):
        return [float(i == int(numbers[0])) for i in range(len(names))]
    if len(numbers) != len(names) or any(not np.isfinite(w) or w < 0 for w in numbers) or sum(numbers) <= 0:
        raise StrideError(f"--style {choice!r}: a blend takes {len(names)} weights (one per style: "
                          f"{', '.join(names)}), none negative, not all zero")
    return numbers


@dataclass
class Stylized:
    file: str
    styles: list[str]
    images: np.ndarray  # K x 3 x H x W in [0, 1]
    written: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "styles": self.styles, "height": int(self.images.shape[-2]),
                "width": int(self.images.shape[-1]), "written": self.written}


def as_picture(image: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(image.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8))


class StylizationServing(Serving):
    task = "stylization"

    def export(self, module: Any, facts: DataFacts) -> ExportedModel:
        assert isinstance(module, StylizationModule)  # the stylization task's module
        styles = facts.num_classes
        network = EveryStyle(module.network, styles).cpu().eval()
        return ExportedModel(network, TensorSpec((3, -1, -1)), TensorSpec((styles, 3, -1, -1)),
                             example_shape=tuple(facts.input_shape))

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        """Every image of `split` in every style, measured with the fixed ruler (lightning_modules.style_ruler)."""
        if not isinstance(data, StylizationData):
            raise StrideError(f"{data.root}: model {model} is a stylization model; evaluate it on a stylization "
                              "dataset")
        styles = style_tensors(data.style_images())
        ruler = StyleRuler(styles)
        sums: dict[str, float] = defaultdict(float)
        samples = measured = 0
        contents: list[Tensor] = []
        results: list[Tensor] = []
        for batch in data.loader(split):
            images = data.on_after_batch_transfer(batch, 0)[0].float()
            outputs = network(images)
            if outputs.ndim != 5 or outputs.shape[1] != data.num_classes:
                raise StrideError(f"model {model} returned shape {list(outputs.shape)}; a stylization model returns "
                                  f"N x {data.num_classes} x 3 x H x W for this dataset's {data.num_classes} styles")
            repeated, _, ids = every_style(images, data.num_classes)
            for name, values in ruler.measure(outputs.flatten(0, 1), repeated, ids).items():
                sums[name] += float(values.double().sum())
            samples += len(images)
            measured += len(repeated)
            if len(contents) < GRID_CONTENTS:
                taken = GRID_CONTENTS - len(contents)
                contents += list(images[:taken])
                results += list(outputs[:taken])
        metrics = {f"{split}_{name}": total / max(1, measured) for name, total in sums.items()}
        metrics[f"{split}_style_ratio"] = float(StyleRuler.ratio(sums["style_loss"], sums["unstyled_style_loss"]))
        metrics[f"{split}_samples"] = float(samples)
        grid = (styles, contents, [[r[s] for r in results] for s in range(data.num_classes)],
                list(data.class_names))
        return Evaluation(split, metrics, samples, data.root.absolute_uri, data.dataset_sha256,
                          details={"grid": grid, "class_names": list(data.class_names)})

    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        styles, contents, results, names = evaluation.details["grid"]
        name = safe_filename(evaluation.split)
        return [plot_style_grid(styles, contents, results, names, folder / f"stylized_{name}.png",
                                f"{title} {evaluation.split}")]

    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The image at its own size as 3 x H x W in [0, 1] (any size: the network is fully convolutional)."""
        width, height = image_size(path, max_pixels)
        return read_image(path, (3, height, width), max_pixels)

    @torch.no_grad()
    def run(self, network: nn.Module, inputs: list[np.ndarray]) -> Any:
        """One image at a time: their sizes differ."""
        return [network(torch.from_numpy(image[None])).numpy()[0] for image in inputs]

    def predictions(self, outputs: Any, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[Stylized]:
        rows = []
        for file, images in zip(files, outputs):
            names = labels if len(images) == len(labels) else [BLEND]
            rows.append(Stylized(file, list(names), np.asarray(images)))
        return rows

    def prediction_table(self, rows: list[Stylized]) -> str:
        header = ("file", "style", "size", "written")
        lines = [(row.file, style, f"{row.images.shape[-1]} x {row.images.shape[-2]}",
                  row.written[i] if i < len(row.written) else "(give --out DIR to write it)")
                 for row in rows for i, style in enumerate(row.styles)]
        return align_columns([header, *lines])

    def draw_predictions(self, rows: list[Stylized], folder: Path) -> list[Path]:
        """DIR/<file stem>-<style>.png for every file and style; an existing file is not overwritten."""
        folder.mkdir(parents=True, exist_ok=True)
        made = []
        for row in rows:
            for style, image in zip(row.styles, row.images):
                target = folder / f"{safe_filename(Path(row.file).stem)}-{safe_filename(style)}.png"
                if target.exists():
                    raise StrideError(f"{target} exists; stride predict does not overwrite files (choose another "
                                      "--out)")
                as_picture(image).save(target, format="PNG")
                row.written.append(str(target))
                made.append(target)
        return made

    def decoder(self, module: Any, **options: Any) -> nn.Module:
        assert isinstance(module, StylizationModule)
        unknown = set(options) - {"style"}
        if unknown:
            raise StrideError(f"a stylization model takes --style, not {', '.join(sorted(unknown))}")
        names = list(module.hparams["stride"]["data"]["class_names"])
        return Blended(module.network, style_weights(str(options["style"]), names)).cpu().eval()


register_serving(StylizationServing())
