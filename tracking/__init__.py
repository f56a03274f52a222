"""MLflow: where runs go, what they record. Kept out of datamodules and lightning_modules."""
