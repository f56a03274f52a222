"""Built-in search specs (package data)."""
