"""Image captioning (docs/models.md, A4): a ResNet-18 encoder with the study's TCN or GRU decoder as a stride task.

The logged model takes S x S images in [0, 1] and returns int64 (max_words + 1) word ids per
image, greedy-decoded and EOS-padded; the vocabulary that decodes them is logged beside it
(`vocabulary/vocabulary.json`, the dataset's own file content) and is what `stride predict`
reads. Models are compared on CIDEr-D (`val_cider`, `test_cider`); `stride evaluate` reports
the COCO caption server's full set (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, PTB-tokenised) and,
beside it, the dataset's constant-caption baseline scored the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn

from stride.architectures.captioning import CaptionExport
from stride.caption_plots import plot_captions
from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, Section, StrideConfig
from stride.datamodules.captioning import CaptioningData
from stride.datamodules.vocabulary import Vocabulary
from stride.errors import StrideError
from stride.lightning_modules.captioning import CaptioningModule, caption_loss
from stride.metrics.caption_scores import caption_scores
from stride.names import safe_filename
from stride.plots import plot_learning_curves
from stride.tasks.base import (DEFAULT_MAX_PIXELS, DataFacts, Evaluation, ExportedModel, Task, TensorSpec,
                               checked_datamodule_arguments, network_taking_pixels, register_task)
from stride.tasks.image_input import read_image
from stride.text_table import align_columns

DEFAULT_IMAGE_SIZE = 224  # the study's encoder input (docs/models.md, A4)
EVAL_BATCH_SIZE = 32
FIGURE_IMAGES = 8


class CaptionAugment(Section):
    """Per image, in the loader."""

    horizontal_flip: bool = False
    random_crop: bool = False  # a random crop of part of the image


class CaptioningDataOptions(DataConfig):
    augment: CaptionAugment = CaptionAugment()
    image_size: PositiveInt | None = None  # the side of the square images are resized to (None: DEFAULT_IMAGE_SIZE)
    max_words: PositiveInt = 50  # longer captions are cut here, generation stops here


class CaptioningConfig(StrideConfig):
    task: Literal["captioning"] = "captioning"
    data: CaptioningDataOptions
# pycocoevalcap's names -> stride's metric suffixes (the module logs the same names per epoch)
METRIC_NAMES = {"BLEU-1": "bleu1", "BLEU-2": "bleu2", "BLEU-3": "bleu3", "BLEU-4": "bleu4", "METEOR": "meteor",
                "ROUGE-L": "rouge_l", "CIDEr-D": "cider"}


@dataclass
class Caption:
    file: str
    caption: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "caption": self.caption}


def named_scores(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{name}": float(values[key]) for key, name in METRIC_NAMES.items() if key in values}


class CaptioningTask(Task):
    name = "captioning"
    config_class = CaptioningConfig
    dataset_tasks = ("captioning",)
    quality = "cider"
    quality_mode = "max"
    labels_artifact = "vocabulary/vocabulary.json"

    # -- training ---------------------------------------------------------------------------
    def datamodule(self, config: StrideConfig, **overrides: Any) -> CaptioningData:
        data = config.data
        assert isinstance(data, CaptioningDataOptions)
        kwargs = checked_datamodule_arguments(self, config, "stride data prepare coco-captions or shapes-captions",
                                              **overrides)
        return CaptioningData(data.path, image_size=data.image_size or DEFAULT_IMAGE_SIZE,
                              horizontal_flip=data.augment.horizontal_flip, random_crop=data.augment.random_crop,
                              max_words=data.max_words, **kwargs)

    def module(self, config: StrideConfig, facts: DataFacts) -> CaptioningModule:
        if len(facts.class_names) != facts.num_classes:
            raise StrideError(f"{config.data.path}: the captioner needs its vocabulary's {facts.num_classes} words, "
                              f"the data facts hold {len(facts.class_names)}")
        assert isinstance(config.data, CaptioningDataOptions)
        description = {"config": config_to_dict(config), "data": facts.as_dict()}
        return CaptioningModule(network_taking_pixels(config, facts), config.optim, config.schedule, description,
                                list(facts.class_names), max_words=config.data.max_words)

    def figures(self, module: CaptioningModule, facts: DataFacts, history: list[dict[str, float]],
                folder: Path, title: str) -> list[Path]:
        made = [plot_learning_curves(history, folder / "learning_curves.png")] if history else []
        pairs, images = module.val_samples
        if pairs and images:
            shown = min(len(pairs), len(images))
            made.append(plot_captions(images[:shown], [c for _, c in pairs[:shown]], [r for r, _ in pairs[:shown]],
                                      folder / "captions_val.png", title=f"{title}: validation images"))
        return made

    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        images, tokens, _, _ = batch
        return caption_loss((forward or network)(images, tokens), tokens)

    def export(self, module: CaptioningModule, facts: DataFacts) -> ExportedModel:
        exported = CaptionExport(module.network, max_words=module.max_words).cpu().eval()
        return ExportedModel(exported, TensorSpec(tuple(facts.input_shape)),
                             TensorSpec((module.max_words + 1,), "int64"))

    def decoder(self, module: CaptioningModule, **options: Any) -> nn.Module:
        """The network decoding with `beam_size` (eager, stopping once every caption has ended)."""
        beam_size = int(options.pop("beam_size", 1))
        if options:
            raise StrideError(f"captioning decodes with beam_size only, not {', '.join(options)}")
        if beam_size < 1:
            raise StrideError(f"--beam-size must be at least 1, got {beam_size}")
        return CaptionExport(module.network, max_words=module.max_words, beam_size=beam_size,
                             early_stop=True).cpu().eval()

    # -- the registry -----------------------------------------------------------------------
    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> CaptioningData:
        size = int(input_shape[-1]) if input_shape else DEFAULT_IMAGE_SIZE
        return CaptioningData(path, image_size=size, batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: CaptioningData, split: str, model: str) -> Evaluation:
        """Every image of `split` once, greedy captions scored against all its references by pycocoevalcap."""
        vocabulary = data.vocabulary
        generated: dict[int, str] = {}
        references: dict[int, list[str]] = {}
        images: list[np.ndarray] = []
        for batch in data.loader(split):
            image_ids = batch[3]
            pixels, _, _, refs = data.on_after_batch_transfer(batch, 0)
            ids = network(pixels.float())
            if ids.ndim != 2:
                raise StrideError(f"model {model} returns shape {list(ids.shape)}, not N x words ids")
            for image_id, row, image_refs in zip(image_ids, ids.cpu().numpy(), refs):
                generated[int(image_id)], references[int(image_id)] = vocabulary.decode(row), list(image_refs)
            if len(images) < FIGURE_IMAGES:
                shown = (pixels[:FIGURE_IMAGES - len(images)].clamp(0, 1) * 255).round().to(torch.uint8)
                images += list(shown.permute(0, 2, 3, 1).cpu().numpy())
        scores = caption_scores(generated, references)
        metrics = named_scores(scores.values, split)
        if data.constant_caption is not None:
            baseline = caption_scores(dict.fromkeys(generated, data.constant_caption), references)
            metrics.update(named_scores(baseline.values, f"{split}_baseline"))
        metrics[f"{split}_samples"] = float(len(generated))
        shown_ids = list(generated)[:len(images)]
        return Evaluation(split, metrics, len(generated), str(Path(data.root).absolute()), data.dataset_sha256,
                          details={"class_names": list(vocabulary.words), "captions": generated,
                                   "skipped_metrics": scores.skipped, "constant_caption": data.constant_caption,
                                   "samples": (images, [generated[i] for i in shown_ids],
                                               [references[i] for i in shown_ids])})

    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        images, generated, references = evaluation.details["samples"]
        if not images:
            return []
        return [plot_captions(images, generated, references,
                              folder / f"captions_{safe_filename(evaluation.split)}.png",
                              title=f"{title} {evaluation.split}")]

    def write_predictions(self, evaluation: Evaluation, folder: Path) -> list[Path]:
        """The COCO caption results file (`[{"image_id", "caption"}]`), what the COCO evaluation code reads."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"captions_{safe_filename(evaluation.split)}_results.json"
        path.write_text(json.dumps([{"image_id": image_id, "caption": caption}
                                    for image_id, caption in evaluation.details["captions"].items()], indent=1))
        return [path]

    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """An RGB image resized to the model's square, as the datamodule resizes stored images."""
        return read_image(path, inputs.shape, max_pixels)

    def predictions(self, outputs: np.ndarray, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[Caption]:
        """`labels` are the model's vocabulary words (`top_k` has no meaning for a caption)."""
        try:
            vocabulary = Vocabulary(list(labels))
        except ValueError:
            raise StrideError("the model's vocabulary is unavailable (its run has no "
                              f"{self.labels_artifact} artifact); cannot turn word ids into words") from None
        return [Caption(file, vocabulary.decode(row)) for file, row in zip(files, np.asarray(outputs))]

    def prediction_table(self, rows: list[Caption]) -> str:
        return align_columns([("file", "caption")] + [(row.file, row.caption or "(empty)") for row in rows])


register_task(CaptioningTask())
