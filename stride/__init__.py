"""stride: a training pipeline for convolutional and temporal-convolutional networks."""

__version__ = "0.1.0"
