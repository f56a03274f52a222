"""Image captioning (docs/models.md, A4): a ResNet-18 encoder with the study's TCN or GRU decoder as a stride task.

The logged model takes S x S images in [0, 1] and returns int64 (max_words + 1) word ids per
image, greedy-decoded and EOS-padded; the vocabulary that decodes them is logged beside it
(`vocabulary/vocabulary.json`, the dataset's own file content) and is what `stride predict`
reads. Models are compared on CIDEr-D (`val_cider`, `test_cider`); `stride evaluate` reports
the COCO caption server's full set (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, PTB-tokenised) and,
beside it, the dataset's constant-caption baseline scored the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from pydantic import PositiveInt
from torch import nn

from stride.caption_plots import plot_captions
from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, Section, StrideConfig
from stride.datamodules.captioning import CaptioningData
from stride.errors import StrideError
from stride.lightning_modules.captioning import CaptioningModule, caption_loss
from stride.plots import plot_learning_curves
from stride.tasks.base import DataFacts, Task, checked_datamodule_arguments, network_taking_pixels, register_task

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

    from stride.architectures.captioning import CaptionNetwork

DEFAULT_IMAGE_SIZE = 224  # the study's encoder input (docs/models.md, A4)
EVAL_BATCH_SIZE = 32


class CaptionAugment(Section):
    """Per image, in the loader."""

    horizontal_flip: bool = False
    random_crop: bool = False  # a random crop of part of the image


class CaptioningDataOptions(DataConfig):
    augment: CaptionAugment = CaptionAugment()
    image_size: PositiveInt | None = None  # the side of the square images are resized to (None: DEFAULT_IMAGE_SIZE)
    max_words: PositiveInt = 50  # longer captions are cut here, generation stops here
    # training: each image of a batch trains on this many of its captions, drawn at random (the study: 5)
    captions_per_image: PositiveInt = 1


class CaptioningConfig(StrideConfig):
    task: Literal["captioning"] = "captioning"
    data: CaptioningDataOptions






class CaptioningTask(Task):
    name = "captioning"
    config_class = CaptioningConfig
    dataset_tasks = ("captioning",)
    quality = "cider"
    quality_mode = "max"

    # -- training ---------------------------------------------------------------------------
    def datamodule(self, config: StrideConfig, **overrides: Any) -> CaptioningData:
        data = config.data
        assert isinstance(data, CaptioningDataOptions)
        kwargs = checked_datamodule_arguments(self, config, "stride data prepare coco-captions or shapes-captions",
                                              **overrides)
        return CaptioningData(data.path, image_size=data.image_size or DEFAULT_IMAGE_SIZE,
                              horizontal_flip=data.augment.horizontal_flip, random_crop=data.augment.random_crop,
                              max_words=data.max_words, captions_per_image=data.captions_per_image, **kwargs)

    def module(self, config: StrideConfig, facts: DataFacts) -> CaptioningModule:
        if len(facts.class_names) != facts.num_classes:
            raise StrideError(f"{config.data.path}: the captioner needs its vocabulary's {facts.num_classes} words, "
                              f"the data facts hold {len(facts.class_names)}")
        assert isinstance(config.data, CaptioningDataOptions)
        description = {"config": config_to_dict(config), "data": facts.as_dict()}
        # config loading checks the architecture is a captioning one: the registry builds those as CaptionNetworks
        network = cast("CaptionNetwork", network_taking_pixels(config, facts))
        return CaptioningModule(network, config.optim, config.schedule, description, list(facts.class_names),
                                max_words=config.data.max_words)

    def figures(self, module: pl.LightningModule, facts: DataFacts, history: list[dict[str, float]],
                folder: Path, title: str) -> list[Path]:
        assert isinstance(module, CaptioningModule)  # made by self.module
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



    # -- the registry -----------------------------------------------------------------------
    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> CaptioningData:
        size = int(input_shape[-1]) if input_shape else DEFAULT_IMAGE_SIZE
        return CaptioningData(path, image_size=size, batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)








register_task(CaptioningTask())
