"""The one exception type users see.

Every check of user input (configs, datasets, shards, checkpoints, URIs) raises
`StrideError` with a message naming the file or field and what was expected; the CLI
prints it without a traceback and exits non-zero.
"""


class StrideError(Exception):
    """A problem with the user's input or environment, explained in the message."""
