"""The `stride` command line.

Each command lives in its own module exposing `register(subparsers)`, which adds its
parser and sets `handler`; this file only lists the modules and dispatches. Modules are
imported lazily by their handlers, so `stride --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from stride.errors import StrideError
from stride.pipelines.disk_full import disk_full_message
from stride.pipelines.interrupts import SignalWatch

COMMAND_MODULES = [
    "stride.pipelines.prepare",
    "stride.pipelines.recipes",
    "stride.pipelines.train",
    "stride.pipelines.quickstart",
    "stride.pipelines.tune",
    "stride.pipelines.study",
    "stride.pipelines.submit",
    "stride.pipelines.promote",
    "stride.pipelines.registry",
    "stride.pipelines.evaluate",
    "stride.pipelines.predict",
    "stride.pipelines.embed",
    "stride.pipelines.explain",
    "stride.pipelines.bench",
    "stride.pipelines.stylize",
]


def build_parser() -> argparse.ArgumentParser:
    from stride import __version__

    parser = argparse.ArgumentParser(prog="stride", description="Train, tune, track and serve CNNs and TCNs.")
    parser.add_argument("--version", action="version", version=f"stride {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


QUIET_LIBRARIES = ("pytorch_lightning", "lightning_fabric", "mlflow")
# logs each database error, traceback and all, then raises it: the CLI reports what is raised, once
RAISES_WHAT_IT_LOGS = "mlflow.store.db.utils"


def quiet_library_info() -> None:
    """Drop the libraries' INFO lines. A handler filter, because Lightning resets its logger's level to
    INFO whenever it is first imported (the commands import it lazily, after this runs)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read by mlflow when first imported, in workers too
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: record.levelno >= logging.WARNING
                          or not record.name.startswith(QUIET_LIBRARIES))
    logging.getLogger(RAISES_WHAT_IT_LOGS).addFilter(lambda record: record.exc_info is None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stride prints its own links
    # no usage reporting to outside hosts unless the user asks for it (the workers inherit these)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # INFO lines of Lightning (accelerators, tips) and MLflow (database set-up) on every run
        quiet_library_info()
    with SignalWatch() as signals:
        try:
            code = int(args.handler(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        except BrokenPipeError:  # `stride recipes | head`: the reader left; no traceback, and none at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # the shell's status for a writer stopped by SIGPIPE
        except Exception as err:
            message = str(err) if isinstance(err, StrideError) else disk_full_message(err, args)
            if message is None or args.verbose:
                raise
            print(f"stride: error: {message}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, SystemExit) as stop:
            if isinstance(stop, SystemExit) and signals.received is None:
                raise  # an exit of its own, not a signal
            code = signals.exit_code()
    if signals.received is not None or code == 130:
        print(f"stride {args.command}: stopped by {signals.describe()}; an MLflow run it had open is marked KILLED",
              file=sys.stderr)
        return signals.exit_code()
    return code


if __name__ == "__main__":
    sys.exit(main())
