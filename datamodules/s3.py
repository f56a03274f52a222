"""S3-compatible object storage for datasets: one client setup, errors that say what to fix, reads that resume.

Credentials and the endpoint come only from the standard AWS configuration that boto3 reads:
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), `AWS_PROFILE` and
`~/.aws/`, or an instance/pod role; `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) points at an
S3-compatible store (MinIO, Ceph, R2). stride never reads, prints or records a credential: the
only thing about the connection that appears in a message is the endpoint URL.

The retry policy (docs/datasets.md, "Datasets in a bucket"): every request is retried by
botocore's *standard* mode, `STRIDE_S3_MAX_ATTEMPTS` attempts in all (default 5; exponential
backoff with jitter, at most 20 s between attempts), with a 10 s connect and a 60 s read timeout.
A download that breaks after it started resumes at the byte it reached (a ranged GET pinned to the
object's ETag, so a replaced object is an error, not a spliced one), under the same attempt
limit. When the attempts are spent the error names the object and the byte; nothing hangs.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any
from urllib.parse import urlsplit

from stride.errors import StrideError

SCHEME = "s3://"
MAX_ATTEMPTS_ENV = "STRIDE_S3_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
OTHER_SCHEMES = ("gs://", "gcs://", "az://", "abfs://", "http://", "https://", "hdfs://", "file://")

_CLIENTS: dict[tuple, Any] = {}  # per process (boto3 clients must not cross a fork) and configuration
_CONFIGURATION = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION",
                  "AWS_REGION", MAX_ATTEMPTS_ENV)


def is_s3(path: object) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def refuse_other_schemes(path: str, what: str) -> None:
    """A URI stride cannot read is an error now, not a folder named 'gs:' later."""
    if path.startswith(OTHER_SCHEMES) or ("://" in path and not is_s3(path)):
        raise StrideError(f"{what} {path!r}: only local folders and s3:// URIs are supported (for Google Cloud "
                          "Storage use its S3-compatible endpoint: s3://BUCKET/PREFIX with "
                          "AWS_ENDPOINT_URL_S3=https://storage.googleapis.com and HMAC keys)")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at either end) of `s3://bucket/prefix`."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise StrideError(f"{uri!r} is not an s3://BUCKET/PREFIX URI")
    prefix = parts.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise StrideError(f"{uri!r}: the prefix has empty, '.' or '..' parts")
    return parts.netloc, prefix


def max_attempts() -> int:
    raw = os.environ.get(MAX_ATTEMPTS_ENV, str(DEFAULT_MAX_ATTEMPTS))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StrideError(f"{MAX_ATTEMPTS_ENV}={raw!r}: expected a whole number of attempts, at least 1")
    return value


def client() -> Any:
    """This process's S3 client (boto3 comes with `pip install stride[s3]`)."""
    key = (os.getpid(), *(os.environ.get(name) for name in _CONFIGURATION))
    if key not in _CLIENTS:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StrideError("s3:// datasets need boto3: pip install 'stride[s3]'") from None
        config = Config(retries={"max_attempts": max_attempts(), "mode": "standard"},
                        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)
        _CLIENTS.clear()
        _CLIENTS[key] = boto3.session.Session().client("s3", config=config)
    return _CLIENTS[key]


def endpoint() -> str:
    return str(client().meta.endpoint_url)


def explain(err: Exception, uri: str, doing: str) -> StrideError:
    """A StrideError naming the object and what to fix; never a credential (botocore's messages carry none)."""
    from botocore import exceptions as boto

    where = f"{uri} (endpoint {endpoint()})"
    if isinstance(err, boto.NoCredentialsError | boto.PartialCredentialsError):
        return StrideError(f"cannot {doing} {where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role)")
    if isinstance(err, boto.EndpointConnectionError | boto.ConnectTimeoutError | boto.ReadTimeoutError
                  | boto.ConnectionClosedError | boto.ResponseStreamingError):
        return StrideError(f"cannot {doing} {where}: the storage did not answer after {max_attempts()} attempt(s) "
                           f"({type(err).__name__}); check AWS_ENDPOINT_URL_S3 and that the server is up")
    if isinstance(err, boto.ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StrideError(f"cannot {doing} {where}: the bucket does not exist")
        if code in ("NoSuchKey", "404") or status == 404:
            return StrideError(f"cannot {doing} {where}: no such object")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken") \
                or status == 403:
            return StrideError(f"cannot {doing} {where}: access denied ({code}); check the credentials "
                               "(AWS_ACCESS_KEY_ID / AWS_PROFILE / role) and the bucket policy")
        if code in ("PreconditionFailed", "412") or status == 412:
            return StrideError(f"cannot {doing} {where}: the object was replaced while it was being read")
        return StrideError(f"cannot {doing} {where}: {code or status}: {err.response.get('Error', {}).get('Message')}")
    return StrideError(f"cannot {doing} {where}: {type(err).__name__}: {err}")


def storage_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError)


class ObjectReader(io.RawIOBase):
    """One object read front to back; a broken download resumes at the byte it reached (same ETag)."""

    def __init__(self, bucket: str, key: str, size: int, etag: str | None = None):
        super().__init__()
        self.bucket, self.key, self.size, self.etag = bucket, key, size, etag
        self.uri = f"{SCHEME}{bucket}/{key}"
        self.offset = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={self.offset}-"}
        if self.etag:
            request["IfMatch"] = self.etag
        response = client().get_object(**request)
        self.etag = self.etag or response.get("ETag")
        self._body = response["Body"]

    def readinto(self, buffer: Any) -> int:
        if self.offset >= self.size:
            return 0
        failures = 0
        while True:
            if self._body is None:
                try:
                    self._open()  # botocore's own retries cover this request
                except storage_errors() as err:
                    raise explain(err, self.uri, f"read byte {self.offset} of") from None
            broken: Exception | None = None
            try:
                data = self._body.read(len(buffer))
            except Exception as err:  # noqa: BLE001 - a connection broken mid-body, whatever layer says so
                data, broken = b"", err
            if not data and broken is None:
                broken = OSError(f"the body ended at byte {self.offset} of {self.size}")
            if broken is None:
                break
            self._drop_body()
            failures += 1
            if failures >= max_attempts():
                raise explain(broken, self.uri, f"read byte {self.offset} of") from None
            time.sleep(min(20.0, 0.5 * 2 ** failures))
        buffer[:len(data)] = data
        self.offset += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                pass
        self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
