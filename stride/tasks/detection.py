"""Dense face detection (docs/models.md, A3): the seed's FaceNet detectors as a stride task.

Training sees letterboxed S x S images; the logged model takes them and returns its K best boxes
(x1, y1, x2, y2, score in the letterboxed pixels, zero rows for none). Evaluation maps the boxes
back to each image's own pixels and scores them with the WIDER FACE protocol: AP at IoU 0.5 over
all faces, and Easy/Medium/Hard AP where the dataset recorded the official subsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from PIL import Image
from pydantic import Field, PositiveInt
from torch import nn

from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, Section, StrideConfig
from stride.datamodules.detection import DetectionData, letterbox_scale
from stride.datamodules.sources.faces import astronaut_face
from stride.detection_plots import plot_detections, plot_precision_recall
from stride.lightning_modules.detection import DetectionModule, detection_loss, true_boxes
from stride.metrics.detection_ap import wider_face_ap
from stride.plots import plot_learning_curves
from stride.tasks.base import DataFacts, Task, checked_datamodule_arguments, network_taking_pixels, register_task

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

    from stride.architectures.face_detector import Detector

DEFAULT_IMAGE_SIZE = 512  # the seed trains at 512 x 512 (docs/models.md, A3)
EVAL_BATCH_SIZE = 8
SUBSETS = ("easy", "medium", "hard")
FIGURE_IMAGES = 8


class DetectionAugment(Section):
    """Per image, in the loader, moving the boxes."""

    horizontal_flip: bool = False
    random_crop: bool = False  # a random crop of part of the image
    color_jitter: float = Field(default=0.0, ge=0, le=1)  # brightness/contrast/saturation jitter of this strength


class DetectionDataOptions(DataConfig):
    augment: DetectionAugment = DetectionAugment()
    # the side of the square the network sees (images are letterboxed into it; None: DEFAULT_IMAGE_SIZE)
    image_size: PositiveInt | None = None
    train_sizes: list[PositiveInt] = []  # multi-scale training: each batch picks one side (001: 512/576/640)


class DetectionConfig(StrideConfig):
    task: Literal["detection"] = "detection"
    data: DetectionDataOptions




def found_boxes(rows: np.ndarray, scale: float) -> np.ndarray:
    """The exported model's (K, 5) rows for one image -> the real detections in the original pixels."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    rows = rows[rows[:, 4] > 0].copy()
    rows[:, :4] /= scale
    return rows


class DetectionTask(Task):
    name = "detection"
    config_class = DetectionConfig
    dataset_tasks = ("detection",)
    quality = "ap"
    quality_mode = "max"

    # -- training ---------------------------------------------------------------------------
    def datamodule(self, config: StrideConfig, **overrides: Any) -> DetectionData:
        data = config.data
        assert isinstance(data, DetectionDataOptions)
        kwargs = checked_datamodule_arguments(self, config, "stride data prepare wider-face or faces", **overrides)
        return DetectionData(data.path, image_size=data.image_size or DEFAULT_IMAGE_SIZE,
                             train_sizes=tuple(data.train_sizes), horizontal_flip=data.augment.horizontal_flip,
                             random_crop=data.augment.random_crop, color_jitter=data.augment.color_jitter, **kwargs)

    def module(self, config: StrideConfig, facts: DataFacts) -> DetectionModule:
        description = {"config": config_to_dict(config), "data": facts.as_dict()}
        # config loading checks the architecture is a detection one: the registry builds those as Detectors
        network = cast("Detector", network_taking_pixels(config, facts))
        return DetectionModule(network, config.optim, config.schedule, description=description)

    def figures(self, module: pl.LightningModule, facts: DataFacts, history: list[dict[str, float]],
                folder: Path, title: str) -> list[Path]:
        assert isinstance(module, DetectionModule)  # made by self.module
        made = []
        if history:
            made.append(plot_learning_curves(history, folder / "learning_curves.png"))
        tested = getattr(module, "last_test_predictions", None)
        if tested:
            predictions = [np.asarray(p, dtype=np.float64) for p, _ in tested]
            truths = [true_boxes(a) for _, a in tested]
            result = wider_face_ap(predictions, [t for t, _ in truths], [k for _, k in truths])
            made.append(plot_precision_recall({"test (letterboxed)": (result.recall, result.precision, result.ap)},
                                              folder / "precision_recall_test.png", title=f"{title} test"))
        made.append(self._detections_figure(module, facts, folder, title))
        made.append(self._astronaut_figure(module, facts, folder, title))
        return made

    @torch.no_grad()
    def _astronaut_figure(self, module: DetectionModule, facts: DataFacts, folder: Path, title: str) -> Path:
        """The trained network on one real photograph (scikit-image's astronaut, its face boxed in green),
        letterboxed as `stride predict` does, boxes drawn in the photograph's own pixels."""
        photo, face = astronaut_face()
        side = facts.input_shape[-1]
        scale = letterbox_scale(photo.shape[0], photo.shape[1], side)
        fitted = Image.fromarray(photo).resize((round(photo.shape[1] * scale), round(photo.shape[0] * scale)),
                                               Image.Resampling.BILINEAR)
        canvas = np.zeros((side, side, 3), dtype=np.float32)
        canvas[:fitted.height, :fitted.width] = np.asarray(fitted, dtype=np.float32) / 255
        network = module.network
        was_training = network.training
        network.eval()
        try:
            device = next(network.parameters()).device
            found = network.detect(torch.from_numpy(canvas).permute(2, 0, 1)[None].to(device))[0].cpu().numpy()
        finally:
            network.train(was_training)
        return plot_detections([photo], [found_boxes(found, scale)], [np.asarray([face], dtype=np.float64)],
                               folder / "detections_astronaut.png", ["skimage.data.astronaut()"], title=title,
                               columns=1)

    @torch.no_grad()
    def _detections_figure(self, module: DetectionModule, facts: DataFacts, folder: Path, title: str) -> Path:
        """The first test images with what the trained network finds on them."""
        network = module.network
        was_training = network.training
        network.eval()
        images, predicted, true, names = [], [], [], []
        data = self.evaluation_data(facts_dataset(module), facts.input_shape)
        device = next(network.parameters()).device
        try:
            for batch in data.loader("test"):
                inputs, targets = data.on_after_batch_transfer(batch, 0)
                found = network.detect(inputs.to(device))
                for image, boxes, target in zip(inputs, found, targets):
                    images.append((image.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8))
                    predicted.append(boxes.cpu().numpy())
                    true.append(target["boxes"].cpu().numpy())
                    names.append(Path(target["annotation"]["file"]).stem[:24])
                if len(images) >= FIGURE_IMAGES:
                    break
        finally:
            network.train(was_training)
        return plot_detections(images[:FIGURE_IMAGES], predicted[:FIGURE_IMAGES], true[:FIGURE_IMAGES],
                               folder / "detections_test.png", names[:FIGURE_IMAGES], title=f"{title} test")

    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        images, targets = batch
        detector = cast("Detector", network)  # FaceNet and YOLO alike (architectures/face_detector.py)
        height, width = images.shape[-2:]
        anchors = detector.anchors(height, width, images.device)
        return detection_loss((forward or network)(images), anchors, targets, detector).total


    # -- the registry -----------------------------------------------------------------------
    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> DetectionData:
        size = int(input_shape[-1]) if input_shape else DEFAULT_IMAGE_SIZE
        return DetectionData(path, image_size=size, batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)













def facts_dataset(module: DetectionModule) -> str:
    return module.hparams["stride"]["config"]["data"]["path"]


register_task(DetectionTask())
