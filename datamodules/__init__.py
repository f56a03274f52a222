"""Bytes and samples: shard formats, converters and Lightning datamodules."""
