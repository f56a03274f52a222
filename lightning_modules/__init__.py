"""Tensors and losses: one LightningModule per task, over any registered backbone."""
