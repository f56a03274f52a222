"""Serving captioners (docs/models.md, A4): greedy word ids per image out, the COCO caption server's scores on a
split beside the dataset's constant-caption baseline, the COCO results file, and captions per file for
`stride predict` (decoded with the vocabulary logged beside the model; `--beam-size` rebuilds the decoder)."""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stride.architectures.captioning import CaptionExport
from stride.caption_plots import plot_captions
from stride.datamodules.captioning import CaptioningData
from stride.datamodules.vocabulary import Vocabulary
from stride.errors import StrideError
from stride.lightning_modules.captioning import CaptioningModule
from stride.metrics.caption_scores import caption_scores
from stride.names import safe_filename
from stride.serving.base import DEFAULT_MAX_PIXELS, Evaluation, ExportedModel, Serving, TensorSpec, register_serving
from stride.serving.image_input import read_image
from stride.tasks import DataFacts
from stride.text_table import align_columns

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

    from stride.datamodules.sharded import ShardedDataModule

FIGURE_IMAGES = 8
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


class CaptioningServing(Serving):
    task = "captioning"
    labels_artifact = "vocabulary/vocabulary.json"

    def export(self, module: pl.LightningModule, facts: DataFacts) -> ExportedModel:
        assert isinstance(module, CaptioningModule)  # the captioning task's module
        exported = CaptionExport(module.network, max_words=module.max_words).cpu().eval()
        return ExportedModel(exported, TensorSpec(tuple(facts.input_shape)),
                             TensorSpec((module.max_words + 1,), "int64"))

    def decoder(self, module: pl.LightningModule, **options: Any) -> nn.Module:
        """The network decoding with `beam_size` (eager, stopping once every caption has ended)."""
        assert isinstance(module, CaptioningModule)  # the captioning task's module
        beam_size = int(options.pop("beam_size", 1))
        if options:
            raise StrideError(f"captioning decodes with beam_size only, not {', '.join(options)}")
        if beam_size < 1:
            raise StrideError(f"--beam-size must be at least 1, got {beam_size}")
        return CaptionExport(module.network, max_words=module.max_words, beam_size=beam_size,
                             early_stop=True).cpu().eval()

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        """Every image of `split` once, greedy captions scored against all its references by pycocoevalcap."""
        assert isinstance(data, CaptioningData)  # the captioning task's evaluation_data
        vocabulary = data.vocabulary
        # keyed by image id; Hashable as caption_scores takes them (a Mapping's key type is invariant)
        generated: dict[Hashable, str] = {}
        references: dict[Hashable, list[str]] = {}
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
        return Evaluation(split, metrics, len(generated), data.root.absolute_uri, data.dataset_sha256,
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


register_serving(CaptioningServing())
