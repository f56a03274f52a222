"""Evaluation metrics as plain functions over numbers and strings (no torch, no Lightning)."""
