"""Converters from each dataset's official raw format (or a package's built-in data) to stride shards."""
