"""Connecting to Ray (embedded or a cluster) and fitting trials to the cluster's resources.

An address that does not answer fails within seconds instead of letting `ray.init` wait;
resource requests the cluster can never satisfy fail before any trial is created, so no
trial sits PENDING forever.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from stride.errors import StrideError
from stride.plugins import PLUGINS_ENV

CONNECT_TIMEOUT_S = 5.0
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray gives the head node one unit of it
DEFAULT_PORTS = {"ray": 10001, "": 6379}


@dataclass(frozen=True)
class TrialResources:
    """What one trial uses in total: `cpus` and `gpus` split evenly over `workers` processes."""

    cpus: float = 1.0
    gpus: float = 0.0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise StrideError(f"--workers-per-trial must be at least 1, got {self.workers}")
        if not (math.isfinite(self.cpus) and self.cpus > 0 and math.isfinite(self.gpus) and self.gpus >= 0):
            raise StrideError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {self.cpus}, {self.gpus}")
        per_worker = self.gpus / self.workers
        if per_worker > 1 and not per_worker.is_integer():
            raise StrideError(f"--gpus-per-trial {self.gpus:g} over {self.workers} workers gives {per_worker:g} "
                              "GPUs per worker; use a fraction below 1 or a whole number per worker")

    @property
    def cpus_per_worker(self) -> float:
        return self.cpus / self.workers

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus / self.workers

    def trial_request(self) -> dict[str, float]:
        """The Tune trial's own reservation. With workers > 1 the trial only drives a Ray Train run
        whose workers reserve the resources themselves (Ray Train V2 + Tune); that driver, and the
        Train controller Ray attaches to its node, stay on the head, so losing a worker node costs
        a restart of the worker group, never of the trial."""
        if self.workers > 1:  # Tune needs a non-empty reservation: a token MiB of memory, no CPU
            return {"cpu": 0, "memory": 2**20, HEAD_NODE_RESOURCE: 0.001}
        return {"cpu": self.cpus, "gpu": self.gpus}


def address_from(explicit: str | None) -> str | None:
    return explicit or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connect to the GCS or Ray client port: fails fast where `ray.init` could hang."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"//{address}")
    if parsed.scheme in ("http", "https"):
        raise StrideError(f"Ray address {address!r} looks like the dashboard (used by `stride submit`); "
                          "`stride tune` needs the cluster address HOST:6379 or ray://HOST:10001")
    host, port = parsed.hostname, parsed.port or DEFAULT_PORTS.get(parsed.scheme, 6379)
    if not host:
        raise StrideError(f"Ray address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise StrideError(f"Ray cluster at {address} is unreachable ({err}); start it (`ray start --head`) "
                          "or pass another --address / RAY_ADDRESS") from None


# What an embedded search prints unless --verbose: stride's own progress lines, not Ray's.
QUIET_TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # the new reporter prints its configuration box at any verbosity; the old, nothing at 0
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",  # a warning per checkpoint burst of short trials
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # a traceback per failed attempt; stride prints a line per failed trial
}
QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup",)  # "token authentication is enabled"

# Where a bucket is and which region it is in: what a cluster's workers need besides their own credentials to
# read datasets, write checkpoints and search state (pyarrow, boto3) and, with a direct artifact root, MLflow
# artifacts in an S3-compatible store (MinIO, Ceph, R2). Never credentials: docs/tuning.md, "Storage in a bucket".
FORWARDED_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "STRIDE_S3_MAX_ATTEMPTS")
# Ray Tune copies these from the driver's environment into every trial actor's runtime env, which Ray's
# runtime-env agent then writes, in plain text, into the session logs of each node (and the dashboard shows)
CREDENTIAL_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"})


def forwarded_env() -> dict[str, str]:
    """What a remote cluster's workers get from this shell: stride's plugins and the object store's endpoint and
    region, never credentials (the nodes take theirs from their own chain: instance role, profile, environment)."""
    return {name: os.environ[name] for name in (PLUGINS_ENV, *FORWARDED_ENV) if os.environ.get(name)}


def keep_credentials_out_of_ray() -> None:
    """Stop Ray Tune from copying the driver's AWS credentials into its trials' runtime env (Ray logs runtime envs
    in plain text). Trials of an embedded Ray still have them: its processes inherit this process's environment;
    a cluster's nodes use their own."""
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(propagated, (set, frozenset)) and propagated & CREDENTIAL_ENV:
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) - CREDENTIAL_ENV


def connect(address: str | None = None, *, num_cpus: int | None = None, state_api: bool = False,
            verbose: bool = False) -> bool:
    """Attach to `address` (or $RAY_ADDRESS), else start an embedded local Ray.

    Returns True when this call started Ray (the caller shuts it down); an already
    initialised Ray (tests, a Ray job's driver) is reused as is. An embedded Ray starts
    without its dashboard (half a minute on 2 cores) unless `state_api` is needed: Ray
    Train's placement-group cleaner polls it, and warns every second without it. Unless
    `verbose`, Ray's INFO lines and the workers' output stay in Ray's log files; warnings
    and errors still show.
    """
    import ray

    # Tune's auto-added loggers include TensorBoard's (and its hint); stride adds the CSV and JSON
    # loggers its leaderboard reads itself (tuning.search)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not verbose:
        for key, value in QUIET_TUNE_ENV.items():
            os.environ.setdefault(key, value)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    address = address_from(address)
    if address:
        check_address(address)
    # "local": a new embedded instance, never a leftover `ray start` cluster Ray would otherwise pick up
    kwargs: dict[str, Any] = {"address": address} if address else {"address": "local", "num_cpus": num_cpus,
                                                                    "include_dashboard": state_api,
                                                                    "_node_ip_address": LOOPBACK}
    kwargs.update(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.WARNING)
    if address and (env_vars := forwarded_env()):
        # a cluster's workers did not inherit this shell's environment: they import the same plugins
        # (a plugin named by file must exist at that path on every node) and reach the same object store
        kwargs["runtime_env"] = {"env_vars": env_vars}
    try:
        with contextlib.nullcontext() if address else loopback_node(), own_sigterm_handler():
            ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError) as err:
        raise StrideError(f"cannot connect to the Ray cluster at {address or 'a new local instance'}: {err}") from None
    return True


@contextmanager
def own_sigterm_handler() -> Iterator[None]:
    """Keep the process's SIGTERM handler across `ray.init`.

    `ray.init` replaces it twice: with a Python handler that calls `sys.exit(15)`, and in its core
    worker with a crash handler that dumps the stack and aborts (exit 134). Either way a
    terminated driver would skip what a stopped search must do (record its state, close its
    runs); the handler it had (stride's, which stops the command like Ctrl-C) is put back, and a
    SIGTERM that came while Ray was starting is handed to it.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as stop:
        if stop.code == signal.SIGTERM and callable(previous):
            previous(signal.SIGTERM, None)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


LOOPBACK = "127.0.0.1"


@contextmanager
def loopback_node() -> Iterator[None]:
    """An embedded Ray whose every server (GCS, raylet, workers, agents, metrics) listens on 127.0.0.1 only.

    Ray binds its servers to the node's IP address, but `ray.init` deliberately turns a loopback
    node address into the machine's network address so that other nodes could join. An
    embedded Ray has no other nodes, so that one conversion is skipped while it starts
    (checked by tests/test_ray_loopback.py, which lists the listening sockets).
    """
    import ray._private.services as services

    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if host == LOOPBACK else resolve(host)
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


@contextmanager
def ray_session(address: str | None = None, *, state_api: bool = False, verbose: bool = False) -> Iterator[None]:
    """`connect` for the length of a block; shuts down only a Ray that this block started."""
    owns_ray = connect(address, state_api=state_api, verbose=verbose)
    try:
        yield
    finally:
        if owns_ray:
            import ray

            ray.shutdown()


def cluster_totals() -> tuple[float, float]:
    import ray

    total = ray.cluster_resources()
    return float(total.get("CPU", 0)), float(total.get("GPU", 0))


def max_concurrency(resources: TrialResources, requested: int | None) -> int:
    """How many trials fit at once; fails now if even one never can."""
    cpus, gpus = cluster_totals()
    where = f"the Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs)"
    if resources.gpus > 0 and gpus == 0:
        raise StrideError(f"--gpus-per-trial {resources.gpus:g} asked for GPUs, but {where} has none; "
                          "drop --gpus-per-trial or connect to a cluster with GPU nodes")
    fits = [math.floor(cpus / resources.cpus + 1e-9)]
    if resources.gpus > 0:
        fits.append(math.floor(gpus / resources.gpus + 1e-9))
    concurrency = min(fits)
    if concurrency < 1:
        raise StrideError(f"one trial needs {resources.cpus:g} CPUs and {resources.gpus:g} GPUs, more than {where} "
                          "has; lower --cpus-per-trial/--gpus-per-trial or add nodes")
    return min(concurrency, requested) if requested else concurrency
