"""Dataset folders on local disk or any fsspec URL (``s3://``, ``gs://``, ``file://``...), with atomic
shard commits and shard reads that verify the sha256 the manifest recorded as they stream.

Remote URLs keep their protocol everywhere (``Storage.url_of``), so a dataset rendered to a bucket is read
from that bucket by training and evaluation. Credentials and endpoints come from the filesystem's
usual configuration (for S3: ``AWS_*`` variables, or ``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible
server such as MinIO).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from discopose._errors import DatasetError, DiscoposeError

# Temp files of a run on another machine sharing the folder cannot be checked for liveness: they are
# only treated as abandoned once this old.
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600


class Storage:
    """A dataset folder. Local folders commit by ``os.replace``; object stores by a single upload,
    which is atomic per object, so a reader never sees a partial shard either way."""

    def __init__(self, url: str):
        self.url = str(url)
        if not self.url.strip():
            raise DiscoposeError("the output location is empty; pass --out FOLDER (or an fsspec URL like s3://bucket/ds)")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise DiscoposeError(f"cannot open {self.url!r}: {exc} (for s3:// install s3fs: "
                                 "pip install 'discopose[s3]')") from None
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, name: str) -> str:
        """``name`` inside the folder, without protocol (what ``self.fs`` takes)."""
        return f"{self.root.rstrip('/')}/{name}"

    def url_of(self, name: str) -> str:
        """``name`` inside the folder as a URL any fsspec reader opens (protocol kept)."""
        return self.path(name) if self.is_local else self.fs.unstrip_protocol(self.path(name))

    def ensure_writable(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            probe = self.path(f".write-probe-{uuid.uuid4().hex}")
            with self.fs.open(probe, "wb") as f:
                f.write(b"ok")
            self.fs.rm(probe)
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types; all mean "cannot write"
            raise DiscoposeError(f"output {self.url!r} is not writable ({exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); choose another --out or fix "
                                 "its permissions/credentials") from None

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def size(self, name: str) -> int | None:
        try:
            return int(self.fs.size(self.path(name)))
        except FileNotFoundError:
            return None

    def read_json(self, name: str) -> dict | None:
        if not self.exists(name):
            return None
        try:
            with self.fs.open(self.path(name), "rb") as f:
                return json.loads(f.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DatasetError(f"{self.url_of(name)} is not valid JSON; delete it to start over") from None

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        tmp = self.temp_path(name)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.commit(tmp, name)
        except OSError as exc:
            raise disk_error(exc, self.url_of(name)) from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def temp_path(self, name: str) -> str:
        """A local temp path for building ``name`` before :meth:`commit`. Its name records the host and
        process that own it, so a later run removes only temps whose owner is gone."""
        folder = self.root if self.is_local else tempfile.gettempdir()
        return os.path.join(folder, f".{name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")

    def commit(self, local_tmp: str, name: str) -> None:
        if self.is_local:
            os.chmod(local_tmp, 0o644)
            os.replace(local_tmp, self.path(name))
        else:
            self.fs.put_file(local_tmp, self.path(name))
            os.unlink(local_tmp)

    def remove_stale_temps(self) -> int:
        """Delete temp files left by dead runs; a concurrent run's temps are left alone."""
        if not self.is_local or not os.path.isdir(self.root):
            return 0
        removed = 0
        for path in Path(self.root).glob(".*.tmp"):
            if _temp_is_abandoned(path):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def open(self, name: str, mode: str = "rb"):
        return self.fs.open(self.path(name), mode)


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _temp_is_abandoned(path: Path) -> bool:
    parts = path.name.rsplit(".", 4)  # [".<name>", host, pid, token, "tmp"]
    try:
        host, pid = parts[1], int(parts[2])
    except (IndexError, ValueError):
        host, pid = None, None
    if host == _host() and pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - path.stat().st_mtime > FOREIGN_TEMP_MAX_AGE_S
    except FileNotFoundError:
        return False


def disk_error(exc: OSError, where: str) -> Exception:
    if exc.errno == errno.ENOSPC:
        return DiscoposeError(f"disk full while writing {where}; free space and rerun the same command to resume "
                              "(complete shards are kept)")
    if exc.errno == errno.EDQUOT:
        return DiscoposeError(f"disk quota exceeded while writing {where}; free space and rerun the same command")
    return exc


def sha256_of(fileobj, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: fileobj.read(chunk), b""):
        digest.update(block)
    return digest.hexdigest()


class _HashingReader:
    """Wraps a binary file: hashes every byte read through it."""

    def __init__(self, fileobj):
        self.fileobj = fileobj
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fileobj.read(size)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        """Read what the consumer left (tar end blocks) and return the hex digest of the whole file."""
        for block in iter(lambda: self.read(1 << 20), b""):
            pass
        return self.digest.hexdigest()


def read_shard(storage: Storage, name: str, expected_sha256: str | None = None,
               digest_out: list | None = None) -> Iterator[tuple[str, bytes]]:
    """``(member name, bytes)`` of a shard in order. The bytes are hashed as they stream: a mismatch
    with ``expected_sha256`` raises at the end of the shard, and ``digest_out`` (a list) receives the
    digest. Every problem is a :class:`DatasetError` that names the shard and the fix."""
    where = storage.url_of(name)
    fix = "run `discopose inspect --verify` on the dataset, then rerun the `discopose render` command that made it"
    try:
        with storage.open(name) as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if not member.isfile() or "." not in member.name:
                        raise DatasetError(f"{where}: unexpected entry {member.name!r}; the shard is corrupt: {fix}")
                    yield member.name, tar.extractfile(member).read()
            digest = reader.finish()
    except FileNotFoundError:
        raise DatasetError(f"{where} is missing; {fix}") from None
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{where} is truncated or corrupt ({type(exc).__name__}: {exc}); {fix}") from None
    if expected_sha256 is not None and digest != expected_sha256:
        raise DatasetError(f"{where} does not match the sha256 in the manifest (corrupted after it was written); {fix}")
    if digest_out is not None:
        digest_out.append(digest)


def scan_shard(storage: Storage, name: str) -> tuple[int, str]:
    """``(sample count, sha256)`` of a shard, raising :class:`DatasetError` if it is truncated or corrupt."""
    digest: list = []
    keys = {member.split(".", 1)[0] for member, _ in read_shard(storage, name, digest_out=digest)}
    return len(keys), digest[0]
