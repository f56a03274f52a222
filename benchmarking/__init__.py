"""Throughput of the stride training path against a bare PyTorch loop (`stride bench`).

Three numbers per recipe, all in samples per second with warm-up steps excluded and the
device synchronised at both ends of every timed span:

- loader: what the datamodule delivers from the shards to the device, per worker count;
- stride: the real training path (recipe's datamodule, LightningModule, trainer and
  MLflow logging), timed between the ends of training steps;
- bare: a plain loop over the same network, optimiser, batch size and precision, on
  batches already on the device.
"""

from stride.benchmarking.report import BenchReport, run_benchmark

__all__ = ["BenchReport", "run_benchmark"]
