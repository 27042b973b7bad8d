"""Object storage: the interface, `LocalStore` and `S3Store`, and the clip and keyframe objects' encoding.

Every key comes from `pipeline.storage.layout` (the layout every store shares). Every write is a whole
object put atomically (write then rename, or one S3 PUT), keyed deterministically: writing the same thing
twice changes nothing. `create` is the write-once variant: it writes only if no object has the key, and
exactly one of several racing creators wins.

Stores: `LocalStore` (a folder) and `S3Store` (`s3://bucket/prefix` through the minio client, imported
lazily); `open_store(url, s3=config.s3)` picks one.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import secrets
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from pipeline.config import S3Config

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_TEMP_PREFIX = ".tmp-"  # a LocalStore's files being written: never listed
_FOLDER_ATTEMPTS = 10  # tries to make a folder a concurrent delete keeps removing


class StoreError(RuntimeError):
    """The store cannot be reached, or a key is missing or malformed."""


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise StoreError(f"malformed store key: {key!r}")
    return key


def _os_reason(exc: OSError) -> str:
    """Why a file system call failed, in a few words: 'No space left on device', 'Read-only file system'."""
    return exc.strerror or str(exc)


class ObjectStore(ABC):
    """Whole-object puts and gets under string keys, as S3 offers them."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if no object has that key: True when this call created it, False when it
        existed already (whoever wrote it). Atomic against concurrent creators: exactly one of several
        racing creates of one key returns True."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def locate(self, key: str) -> str:
        """Where a person finds the object: a file path or a URL."""
        return f"{self.url}/{check_key(key)}"

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def put_json(self, key: str, value) -> None:
        self.put(key, json.dumps(value, indent=1, sort_keys=True).encode())

    def get_json(self, key: str):
        return json.loads(self.get(key))


class LocalStore(ObjectStore):
    """A folder on local disk; the embedded default.

    Never follows a symbolic link below its root: a key whose path passes through one (planted inside the
    folder, pointing anywhere) is refused, so nothing outside the folder is read, written or deleted. Failures
    of the file system (a full disk, a read-only or unreadable folder) are StoreErrors naming the operation,
    the key and the reason. Files and folders get the modes the umask allows (0666 and 0777 less it), as any
    other program's; folders a deletion leaves empty are removed, up to the root.
    """

    def __init__(self, root: str | Path, *, create: bool = True):
        """`create`: make the folder when it is missing (writers); otherwise a missing one is a StoreError
        (readers, which have nothing to read there)."""
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        if not create:
            if not self.root.is_dir():
                raise StoreError(f"there is no store at {self.root} (check --store or VIGIL_STORE)")
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store folder {self.root}: {_os_reason(exc)}") from None

    @contextmanager
    def _failing(self, operation: str, key: str) -> Iterator[None]:
        """OSErrors inside as StoreErrors naming the operation, the key and the reason."""
        try:
            yield
        except OSError as exc:
            raise StoreError(f"cannot {operation} {key!r} in store {self.url}: {_os_reason(exc)}") from None

    def _path(self, key: str) -> Path:
        """The file of `key`, once no part of its path below the root is a symbolic link (missing parts are
        fine: a write makes them as folders)."""
        path = self.root
        for part in check_key(key).split("/"):
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break
            if stat.S_ISLNK(mode):
                self._refuse_link(key, path)
        return self.root / key

    def _refuse_link(self, key: str, link: Path) -> NoReturn:
        raise StoreError(
            f"refusing {key!r} in store {self.url}: {link.relative_to(self.root).as_posix()} is a symbolic link "
            f"(to {os.readlink(link)}); the store never follows links"
        )

    def _write_temp(self, folder: Path, data: bytes) -> Path:
        """`data` in a new temp file in `folder` (made when missing). A concurrent delete removes a folder it
        empties; if that happens between the mkdir and the temp file's creation, the folder is made again."""
        for _ in range(_FOLDER_ATTEMPTS):
            temp = folder / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                # 0666: the umask takes off what this user does not share, as for any file written here.
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except (FileNotFoundError, FileExistsError):
                continue
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            return temp
        raise OSError(errno.ENOENT, f"folder {folder} keeps disappearing")

    def _holds(self, path: Path, data: bytes) -> bool:
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == len(data) and path.read_bytes() == data

    def _remove_empty_folders(self, folder: Path) -> None:
        """Remove `folder` and then its parents while they are empty, up to the root (kept). rmdir removes
        only an empty folder, so a writer's temp file keeps its folder, and a writer that finds its folder
        gone makes it again (`_write_temp`)."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone already, or not removable): nor are the folders above
                return
            folder = folder.parent

    def put(self, key: str, data: bytes) -> None:
        with self._failing("write", key):
            path = self._path(key)
            if self._holds(path, data):
                return  # unchanged: leave the file (and its mtime) alone
            temp = self._write_temp(path.parent, data)
            try:
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise

    def create(self, key: str, data: bytes) -> bool:
        """Write-once `key`: the bytes go to a temp file in the target folder, then `os.link` gives it the
        key's name, atomically, failing if that name exists (the O_EXCL a rename lacks). Readers never see
        a partial object; the temp file is removed whatever happens."""
        with self._failing("create", key):
            path = self._path(key)
            temp = self._write_temp(path.parent, data)
            try:
                try:
                    os.link(temp, path)
                except FileExistsError:
                    if stat.S_ISDIR(os.lstat(path).st_mode):
                        raise StoreError(f"cannot create {key!r} in store {self.url}: a folder has that name") from None
                    return False
                return True
            finally:
                temp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        with self._failing("read", key):
            path = self._path(key)
            try:
                # O_NONBLOCK: a FIFO planted under the key must not hang the read; the fstat below refuses it.
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                raise StoreError(f"no object {key!r} in store {self.url}") from None
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise StoreError(f"no object {key!r} in store {self.url}: {path} is not a file")
                return handle.read()

    def exists(self, key: str) -> bool:
        with self._failing("check", key):
            try:
                return stat.S_ISREG(os.lstat(self._path(key)).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return False

    def list(self, prefix: str = "") -> Iterator[str]:
        # A plain string prefix, as S3 has it: "a" also finds "ab/x". The walk starts at the deepest folder the
        # prefix names whole ("a/" and "a/b" start at "a", "ab" at the root) and never enters a link.
        with self._failing("list", prefix):
            folder_key = prefix.rpartition("/")[0]
            folder = self._path(folder_key) if folder_key else self.root
            keys: list[str] = []

            def walk(directory: Path, key_prefix: str) -> None:
                try:
                    entries = list(os.scandir(directory))
                except (FileNotFoundError, NotADirectoryError):  # missing, or emptied and removed meanwhile
                    return
                for entry in entries:
                    key = key_prefix + entry.name
                    if not key.startswith(prefix):
                        continue
                    if entry.is_symlink():
                        self._refuse_link(key, Path(entry.path))
                    if entry.is_dir(follow_symlinks=False):
                        walk(Path(entry.path), f"{key}/")
                    elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(_TEMP_PREFIX):
                        keys.append(key)

            walk(folder, f"{folder_key}/" if folder_key else "")
            return iter(sorted(keys))

    def delete(self, key: str) -> None:
        with self._failing("delete", key):
            path = self._path(key)
            path.unlink(missing_ok=True)
            self._remove_empty_folders(path.parent)


log = logging.getLogger(__name__)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# S3 error codes meaning the credentials are wrong, expired or not allowed: retrying cannot help.
_REJECTED = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken", "InvalidSecurity"}
)
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
# Answers of a service that is up but struggling: retried like an unreachable one.
_TRANSIENT = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "OperationAborted",
        "Throttling",
        "ThrottlingException",
    }
)


def _redact(url: str) -> str:
    """`url` without any user:password@ part (so a secret typed into a URL never reaches a message)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/@]*@", r"\1***@", url.strip())


def _parse_endpoint(endpoint: str) -> tuple[str, str, bool]:
    """'http://host:port' -> (canonical endpoint, 'host:port', secure). No credentials or path allowed in it."""
    from urllib.parse import urlsplit

    problem = (
        "S3 endpoint must look like http://host:port or https://host (no credentials, no path); "
        f"got {_redact(endpoint)}"
    )
    try:
        parts = urlsplit(endpoint.strip())
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise StoreError(problem) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise StoreError(problem)
    return f"{parts.scheme}://{parts.netloc}", parts.netloc, parts.scheme == "https"


def _reason(exc: BaseException) -> str:
    """A short cause for a transport failure: 'connection refused', 'timed out', ..."""
    text = str(getattr(exc, "reason", None) or exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    if match:
        return match.group(1).strip().lower()
    if "timed out" in text.lower():
        return "timed out"
    return type(getattr(exc, "reason", None) or exc).__name__


class S3Store(ObjectStore):
    """Objects in an S3 bucket under an optional prefix (`s3://bucket/prefix`), the same keys as LocalStore.

    Talks to any S3 service through the minio client (imported on first use). Credentials come only
    from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN) and are
    kept only inside the client: never in `repr`, messages, logs or pickles. An unreachable or failing
    (5xx) service is retried with exponential backoff, bounded by `attempts` and `deadline` seconds, then
    a StoreError names the endpoint and the operation; rejected credentials fail at once.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        region: str | None = None,
        settings: S3Config | None = None,
    ):
        if not _BUCKET.match(bucket) or ".." in bucket:
            shown = f" {bucket!r}" if re.fullmatch(r"[A-Za-z0-9._-]*", bucket) else ""
            raise StoreError(f"invalid S3 bucket name{shown}: 3-63 lowercase letters, digits, dots and hyphens")
        prefix = prefix.strip("/")
        if prefix and (not _KEY.match(prefix) or any(part in (".", "..") for part in prefix.split("/"))):
            raise StoreError(
                f"malformed prefix in store URL s3://{bucket}/...: letters, digits, '.', '_', '-' and '/' only"
            )
        self.bucket, self.prefix = bucket, prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.endpoint, self._netloc, self._secure = _parse_endpoint(endpoint)
        self.region = region
        self.settings = settings or S3Config()  # retries, timeouts, bucket creation
        self._credentials()  # incomplete credentials fail now, not at the first write
        self._client = None
        self._bucket_ready = False

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    def __getstate__(self) -> dict:
        # A pickled store (e.g. sent to a Ray actor) carries no client and so no credentials: the receiving
        # process builds its own client from its own environment.
        return self.__dict__ | {"_client": None}

    @staticmethod
    def _credentials() -> tuple[str | None, str | None, str | None]:
        access, secret, token = (
            os.environ.get(name) or None for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        )
        if (access is None) != (secret is None):
            raise StoreError(
                "incomplete S3 credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or neither, for anonymous access)"
            )
        return access, secret, token

    def _minio(self):
        if self._client is None:
            import certifi
            import urllib3
            from minio import Minio

            access, secret, token = self._credentials()
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=self.settings.connect_timeout, read=self.settings.read_timeout),
                maxsize=10,
                cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=urllib3.Retry(total=0, redirect=False),  # retried in _call, with backoff, not here
            )
            self._anonymous = access is None
            self._client = Minio(
                self._netloc, access_key=access, secret_key=secret, session_token=token,
                secure=self._secure, region=self.region, http_client=http,
            )  # fmt: skip
        return self._client

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rejected(self, code: str, what: str) -> str:
        if getattr(self, "_anonymous", False):
            return (
                f"S3 endpoint {self.endpoint} refused anonymous access ({code}) to {what} in {self.url}: "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return (
            f"S3 credentials were rejected by endpoint {self.endpoint} ({code}) for {what} in {self.url}: "
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )

    def _call(self, operation: str, fn, key: str | None = None, missing=None):
        """fn(client), retried while the service is unreachable or failing; S3 errors become StoreErrors.

        `missing(code)` answers a NoSuchKey/NoSuchBucket (default: the error is raised).
        """
        import urllib3
        from minio.error import InvalidResponseError, S3Error, ServerError

        what = f"{operation} {key!r}" if key is not None else operation
        started = time.monotonic()
        attempt, reason = 0, ""
        while True:
            attempt += 1
            try:
                return fn(self._minio())
            except S3Error as exc:
                if exc.code in _REJECTED:
                    raise StoreError(self._rejected(exc.code, what)) from None
                if exc.code in _MISSING and missing is not None:
                    return missing(exc.code)
                if exc.code not in _TRANSIENT:
                    raise StoreError(
                        f"S3 {what} in {self.url} at {self.endpoint} failed: {exc.code}: {exc.message}"
                    ) from None
                reason = str(exc.code)
            except ServerError as exc:
                reason = f"HTTP {exc.status_code}"
            except InvalidResponseError as exc:
                status = getattr(exc, "_code", None)
                if isinstance(status, int) and status < 500:
                    raise StoreError(
                        f"S3 {what} in {self.url} at {self.endpoint} failed: unexpected HTTP {status} answer"
                    ) from None
                reason = f"HTTP {status}"
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                if isinstance(getattr(exc, "reason", exc), urllib3.exceptions.SSLError):  # retrying cannot fix TLS
                    raise StoreError(
                        f"S3 {what} in {self.url}: TLS with endpoint {self.endpoint} failed: "
                        f"{getattr(exc, 'reason', exc)}"
                    ) from None
                reason = _reason(exc)
            elapsed = time.monotonic() - started
            delay = self.settings.delay(attempt)
            if attempt >= self.settings.attempts or elapsed + delay > self.settings.deadline:
                raise StoreError(
                    f"S3 endpoint {self.endpoint} is unreachable or failing: {what} in {self.url} "
                    f"gave up after {attempt} attempt(s) in {elapsed:.1f} s ({reason})"
                )
            log.warning(
                "S3 %s in %s at %s failed (%s); retry %d of %d in %.1f s",
                what,
                self.url,
                self.endpoint,
                reason,
                attempt,
                self.settings.attempts - 1,
                delay,
            )
            time.sleep(delay)

    def _ensure_bucket(self) -> None:
        """Before the first write: make sure the bucket exists, creating it when allowed."""
        if self._bucket_ready:
            return
        from minio.error import S3Error

        def ensure(client) -> None:
            if client.bucket_exists(self.bucket):
                return
            if not self.settings.create_bucket:
                raise StoreError(
                    f"S3 bucket {self.bucket!r} does not exist at {self.endpoint} (and s3.create_bucket is false)"
                )
            try:
                client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._call("bucket check", ensure)
        self._bucket_ready = True

    def put(self, key: str, data: bytes) -> None:
        import mimetypes

        name = self._name(key)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._ensure_bucket()
        # One whole-object PUT (multipart above the part size, completed atomically): readers see the old
        # object or the new one, never a part. A fresh stream per attempt, so a retry sends every byte.
        self._call(
            "put",
            lambda client: client.put_object(self.bucket, name, io.BytesIO(data), len(data), content_type=kind),
            key,
        )

    def create(self, key: str, data: bytes) -> bool:
        """Write-once `key`: one PutObject with `If-None-Match: *`, which the service refuses (HTTP 412
        PreconditionFailed) when an object has the key, so exactly one of racing creates wins.

        Contract: `data` must be unique to the caller (e.g. carry a random token). A create retried after
        a lost response can get a 412 caused by its own earlier, successful attempt; then the object is read
        back and the create counts as ours (True) when its bytes equal `data`. A 412 on the first attempt
        is always False, whatever the bytes.
        """
        import mimetypes

        from minio.error import InvalidResponseError, S3Error, ServerError

        name = self._name(key)
        headers = {"If-None-Match": "*", "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream"}
        self._ensure_bucket()
        attempts = 0

        def write(client) -> bool:
            nonlocal attempts
            attempts += 1
            try:
                # `_put_object` is a private method of minio 7.2 (one PutObject with exactly these headers):
                # the public `put_object` would send If-None-Match as `x-amz-meta-if-none-match` user metadata.
                client._put_object(self.bucket, name, data, headers=headers)
            except S3Error as exc:  # how SeaweedFS and MinIO answer: an XML error, code PreconditionFailed
                if exc.code == "PreconditionFailed" or getattr(exc.response, "status", None) == 412:
                    return False
                raise
            except InvalidResponseError as exc:  # a 412 without an XML body
                if getattr(exc, "_code", None) == 412:
                    return False
                raise
            except ServerError as exc:
                if exc.status_code == 412:
                    return False
                raise
            return True

        if self._call("create", write, key):
            return True
        if attempts == 1:
            return False
        # A 412 on a retry: the attempt whose answer was lost may have written the object; it did if the
        # bytes are ours (the caller's data is unique to it). Gone again by now: not ours to claim.
        return self._call("create check", lambda client: self._read(client, name), key, lambda code: None) == data

    def _read(self, client, name: str) -> bytes:
        response = client.get_object(self.bucket, name)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def get(self, key: str) -> bytes:
        name = self._name(key)

        def read(client) -> bytes:
            return self._read(client, name)

        def missing(code: str) -> bytes:
            raise StoreError(f"no object {key!r} in store {self.url}")

        return self._call("get", read, key, missing)

    def exists(self, key: str) -> bool:
        name = self._name(key)
        return self._call(
            "exists", lambda client: client.stat_object(self.bucket, name) is not None, key, lambda code: False
        )

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""

        def names(client) -> list[str]:
            return [item.object_name for item in client.list_objects(self.bucket, prefix=base + prefix, recursive=True)]

        found = self._call("list", names, prefix or None, lambda code: [])
        return iter(sorted(name[len(base) :] for name in found if name.startswith(base) and not name.endswith("/")))

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call("delete", lambda client: client.remove_object(self.bucket, name), key, lambda code: None)

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        if not keys:
            return 0
        from minio.deleteobjects import DeleteObject

        def remove(client) -> list:
            return list(client.remove_objects(self.bucket, [DeleteObject(self._name(key)) for key in keys]))

        errors = [
            error
            for error in self._call("delete", remove, prefix or None, lambda code: [])
            if error.code not in _MISSING
        ]
        if errors:
            if errors[0].code in _REJECTED:
                raise StoreError(self._rejected(errors[0].code, f"delete {prefix!r}"))
            raise StoreError(
                f"S3 delete of {len(errors)} object(s) under {prefix!r} in {self.url} failed: "
                f"{errors[0].code}: {errors[0].message}"
            )
        return len(keys)


def open_store(url: str, s3: S3Config | None = None, *, create: bool = True) -> ObjectStore:
    """Open the store named by `url`: a folder path (or file:// URL), or `s3://bucket[/prefix]`.

    `s3` is the config's S3 section (`config.s3`; default settings without it). The endpoint comes from it,
    else from VIGIL_S3_ENDPOINT (or AWS_ENDPOINT_URL); the region from it, else AWS_DEFAULT_REGION;
    credentials only from the environment. `create` False (commands that only read or remove): a missing
    store folder is an error instead of being made (an S3 bucket is only ever made by a first write).
    """
    if url.startswith("s3://"):
        s3 = s3 or S3Config()
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        endpoint = s3.endpoint or os.environ.get("VIGIL_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            raise StoreError(
                f"store {_redact(url)} needs an S3 endpoint: set VIGIL_S3_ENDPOINT (e.g. http://127.0.0.1:9000) "
                "or s3.endpoint in the config"
            )
        return S3Store(
            bucket,
            prefix,
            endpoint=endpoint,
            region=s3.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None,
            settings=s3,
        )
    if "://" in url and not url.startswith("file://"):
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"unsupported store URL {_redact(url)!r}: scheme {scheme}:// is not available; use a folder path or s3://bucket/prefix"
        )
    return LocalStore(url.removeprefix("file://"), create=create)


def open_configured_store(config, *, create: bool = True) -> ObjectStore:
    """The store a `VigilConfig` names, reached with its S3 settings (endpoint, retries, timeouts); `create`
    as for `open_store`."""
    return open_store(config.store, s3=config.s3, create=create)
