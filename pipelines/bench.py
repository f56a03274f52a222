"""`stride bench`: samples/s of the loader, of stride's training path and of a bare PyTorch loop;
with `--search`, the per-trial overhead of a search.

    stride bench digits-cnn --batch-size 512 --steps 100 --json
    stride bench digits-cnn --cache none,memory               # one report per data.cache mode
    stride bench tcn-seqmnist-single --synthetic 20000     # random data of MNIST's shape
    stride bench --search quickstart-search --set data.path=shards/digits
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import tempfile
from pathlib import Path

from stride.errors import StrideError
from stride.pipelines.arguments import add_config_arguments, add_tracking_argument, config_from_args, positive_int


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated worker counts like 0,1,2, got {text!r}") from None
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative worker counts like 0,1,2, got {text!r}")
    return counts


def shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 1,28,28, got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected an image shape C,H,W like 1,28,28, got {text!r}")
    return dims


def cache_modes(text: str) -> list[str]:
    from stride.datamodules.cache import CACHE_MODES

    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes or any(mode not in CACHE_MODES for mode in modes):
        raise argparse.ArgumentTypeError(f"expected comma-separated modes of {', '.join(CACHE_MODES)}, got {text!r}")
    return modes


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="training throughput of a recipe against a bare PyTorch loop")
    add_config_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, help="training batch size (default: the recipe's)")
    parser.add_argument("--steps", type=positive_int, default=100, help="timed training steps (default 100)")
    parser.add_argument("--warmup-steps", type=positive_int, default=10,
                        help="untimed steps first, for allocation, cuDNN autotuning, worker start-up (default 10)")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="alternate bare and stride runs this often and keep the fastest of each (default 1)")
    parser.add_argument("--workers", type=worker_counts,
                        help="loader worker counts to measure, e.g. 0,1,2 (default 0,1,2,4,8 up to the core count, "
                             "plus the recipe's)")
    parser.add_argument("--loader-batches", type=positive_int, help="timed batches per loader measurement "
                        "(default: --steps)")
    parser.add_argument("--synthetic", type=positive_int, metavar="N",
                        help="benchmark on N random training images written to a temporary folder instead of "
                             "data.path (for when the dataset is not prepared)")
    parser.add_argument("--synthetic-shape", type=shape, default=(1, 28, 28), metavar="C,H,W",
                        help="image shape of --synthetic data (default 1,28,28, MNIST's)")
    parser.add_argument("--synthetic-encoding", choices=("png", "npy"), default="png",
                        help="how --synthetic images are stored (default png, as `stride data prepare`)")
    parser.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's); 1 gives "
                        "steadier CPU figures on a machine shared with other jobs")
    parser.add_argument("--cache", type=cache_modes, metavar="MODES",
                        help="data.cache modes to measure, e.g. none,memory,device: one report each (default: the "
                             "recipe's)")
    parser.add_argument("--search", metavar="SPEC", help="instead: run this search spec (`stride tune --list`) "
                        "and report each trial's overhead (its wall time minus its epochs); --set applies to it")
    parser.add_argument("--storage", help="--search: where its Ray state goes (default: a temporary folder)")
    parser.add_argument("--scheduler", choices=["asha", "fifo", "pbt"], help="--search: override the spec's scheduler")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run_command)


def run_search_bench(args: argparse.Namespace) -> int:
    from stride.tuning.overhead import measure_search_overhead

    with tempfile.TemporaryDirectory(prefix="stride-bench-search-") as tmp, \
            contextlib.redirect_stdout(sys.stderr):  # the search's progress lines: stdout is the report's
        report = measure_search_overhead(args.search, overrides=args.overrides,
                                         tracking_uri=args.tracking_uri or f"sqlite:///{tmp}/mlruns.db",
                                         storage=args.storage or f"{tmp}/ray_results",
                                         spec_overrides={"scheduler": args.scheduler} if args.scheduler
                                         else None)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0


def run_command(args: argparse.Namespace) -> int:
    from stride.benchmarking import run_benchmark
    from stride.benchmarking.synthetic import write_synthetic_images

    if args.tracking_uri:  # an unusable store fails now, not after the measurements
        from stride.tracking.store import check_reachable

        check_reachable(args.tracking_uri)
    if args.search:
        if args.recipe or args.config:
            raise StrideError("--search runs a search spec; give no recipe or --config with it")
        return run_search_bench(args)
    config = config_from_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.batch_size:
        config.data.batch_size = args.batch_size
    command = shlex.join(["stride", *sys.argv[1:]]) if sys.argv and "stride" in sys.argv[0] else ""
    if not args.synthetic and not config.data.path.startswith("s3://") \
            and not (Path(config.data.path) / "manifest.json").is_file():  # a bucket's is checked when it is read
        raise StrideError(f"no dataset at {config.data.path}: prepare it (`stride data prepare`), point "
                          "--set data.path=DIR at it, or benchmark on random data of its shape with --synthetic N")
    with tempfile.TemporaryDirectory(prefix="stride-bench-data-") as tmp:
        if args.synthetic:
            if args.synthetic < config.data.batch_size:
                raise StrideError(f"--synthetic {args.synthetic} is fewer samples than one batch of "
                                  f"{config.data.batch_size}")
            config.data.path = str(write_synthetic_images(f"{tmp}/synthetic", args.synthetic,
                                                          shape=args.synthetic_shape,
                                                          encoding=args.synthetic_encoding))
        reports = []
        for mode in args.cache or [config.data.cache]:
            measured = config.model_copy(deep=True)
            measured.data.cache = mode
            reports.append(run_benchmark(measured, steps=args.steps, warmup_steps=args.warmup_steps,
                                         repeats=args.repeats, workers=args.workers,
                                         loader_batches=args.loader_batches, tracking_uri=args.tracking_uri,
                                         command=command))
    if args.json:
        print(json.dumps(reports[0].as_dict() if len(reports) == 1 else [r.as_dict() for r in reports], indent=2))
    else:
        print("\n\n".join(report.text() for report in reports))
    return 0
