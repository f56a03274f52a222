"""`stride submit` and `stride jobs`: run stride commands on a Ray cluster through the Ray Jobs API.

The job's driver runs on the head node in a runtime environment built from
`--working-dir` (uploaded; large local outputs excluded) plus `--pip` packages or a
`--requirements` file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from stride.errors import StrideError

# local outputs that must never be uploaded with the working directory
DEFAULT_EXCLUDES = [".git", ".venv", "venv", "ray_results", "mlruns.db", "mlartifacts", "mlruns", "checkpoints",
                    "shards", "__pycache__", "*.ckpt"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def register(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser("submit", help="submit a stride command to a Ray cluster as a Ray job",
                                 usage="stride submit [options] -- stride tune SPEC ...")
    _add_address(submit)
    submit.add_argument("--working-dir", default=".", help="folder uploaded as the job's working directory")
    submit.add_argument("--pip", nargs="+", default=[], metavar="PKG", help="pip packages for the job")
    submit.add_argument("--requirements", help="requirements.txt installed for the job (instead of --pip)")
    submit.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE", help="environment variables")
    submit.add_argument("--exclude", nargs="+", default=[], help="more working-dir paths not to upload")
    submit.add_argument("--job-id", help="submission id (default: generated)")
    submit.add_argument("--wait", action="store_true", help="follow the logs until the job ends; exit non-zero "
                        "unless it succeeded")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- the command to run, e.g. stride tune ...")
    submit.set_defaults(handler=run_submit)

    jobs = commands.add_parser("jobs", help="list, inspect, follow or stop Ray jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text in [("list", "all jobs"), ("status", "one job's status"), ("logs", "one job's logs"),
                            ("stop", "stop a running job")]:
        action = actions.add_parser(name, help=help_text)
        _add_address(action)
        if name != "list":
            action.add_argument("job_id")
        if name == "logs":
            action.add_argument("--follow", action="store_true", help="stream until the job ends")
    jobs.set_defaults(handler=run_jobs)


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray dashboard URL http://HEAD:8265 (default: $RAY_ADDRESS when it is "
                        "an http URL)")


def job_client(address: str | None, timeout_s: float = 5.0):
    """A JobSubmissionClient, after checking within seconds that the dashboard answers."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address.startswith(("http://", "https://")):
        raise StrideError("give the Ray dashboard address with --address http://HEAD:8265 (or set RAY_ADDRESS to it)")
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout_s):
            pass
    except urllib.error.HTTPError as err:
        if err.code == 401:  # Ray's token authentication, on by default since 2.59: send the local token
            os.environ.setdefault("RAY_AUTH_MODE", "token")
    except (urllib.error.URLError, OSError) as err:
        raise StrideError(f"Ray dashboard {address} is unreachable ({getattr(err, 'reason', err)}); is the cluster "
                          "up (`ray start --head` / `ray up infra/ray/cluster.yaml`)?") from None
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def runtime_env(args: argparse.Namespace) -> dict:
    working_dir = Path(args.working_dir)
    if not working_dir.is_dir():
        raise StrideError(f"--working-dir {working_dir} is not a folder")
    env: dict = {"working_dir": str(working_dir.absolute()), "excludes": [*DEFAULT_EXCLUDES, *args.exclude]}
    if args.pip and args.requirements:
        raise StrideError("give --pip or --requirements, not both")
    if args.requirements:
        if not Path(args.requirements).is_file():
            raise StrideError(f"--requirements {args.requirements} does not exist")
        env["pip"] = str(Path(args.requirements).absolute())
    elif args.pip:
        env["pip"] = list(args.pip)
    if args.env:
        pairs = [item.split("=", 1) for item in args.env]
        if any(len(p) != 2 for p in pairs):
            raise StrideError(f"--env expects KEY=VALUE items, got {args.env}")
        env["env_vars"] = dict(pairs)
    return env


def run_submit(args: argparse.Namespace) -> int:
    command = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not command:
        raise StrideError("nothing to run; usage: stride submit --address http://HEAD:8265 -- stride tune SPEC ...")
    env = runtime_env(args)
    client = job_client(args.address)
    job_id = client.submit_job(entrypoint=shlex.join(command), runtime_env=env, submission_id=args.job_id)
    print(f"submitted job {job_id}: {shlex.join(command)}")
    print(f"follow it with: stride jobs logs {job_id} --follow --address {args.address or '$RAY_ADDRESS'}")
    if not args.wait:
        return 0
    _follow(client, job_id)
    status = str(client.get_job_status(job_id).value)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _follow(client, job_id: str) -> None:
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())


def run_jobs(args: argparse.Namespace) -> int:
    client = job_client(args.address)
    if args.action == "list":
        for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000))
            print(f"{job.submission_id or job.job_id}  {job.status.value:9s}  {started}  {job.entrypoint}")
        return 0
    try:
        info = client.get_job_info(args.job_id)
    except RuntimeError as err:
        raise StrideError(f"no job {args.job_id!r} on this cluster ({err}); see `stride jobs list`") from None
    if args.action == "status":
        print(f"{args.job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
    elif args.action == "logs":
        if args.follow:
            _follow(client, args.job_id)
        else:
            print(client.get_job_logs(args.job_id), end="")
    elif args.action == "stop":
        stopped = client.stop_job(args.job_id)
        print(f"{args.job_id}: {'stop requested' if stopped else 'not running (' + info.status.value + ')'}")
    return 0
