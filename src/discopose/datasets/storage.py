"""Dataset folders on local disk or any fsspec URL, with atomic shard commits."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from discopose._errors import DatasetError, DiscoposeError


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
            raise DiscoposeError(f"cannot open output {self.url!r}: {exc} (for s3:// install s3fs)") from None
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def ensure_writable(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            probe = self.path(f".write-probe-{uuid.uuid4().hex}")
            with self.fs.open(probe, "wb") as f:
                f.write(b"ok")
            self.fs.rm(probe)
        except (OSError, PermissionError) as exc:
            raise DiscoposeError(f"output {self.url!r} is not writable ({exc.__class__.__name__}: {exc}); "
                                 "choose another --out or fix its permissions") from None

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def read_json(self, name: str) -> dict | None:
        if not self.exists(name):
            return None
        try:
            with self.fs.open(self.path(name), "rb") as f:
                return json.loads(f.read())
        except json.JSONDecodeError:
            raise DatasetError(f"{self.path(name)} is not valid JSON; delete it to start over") from None

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.root if self.is_local else None)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; datasets are meant to be shared
            self.commit(tmp, name)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def temp_path(self, name: str) -> str:
        """A local temp path for building ``name`` before :meth:`commit`."""
        folder = self.root if self.is_local else tempfile.gettempdir()
        return os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")

    def commit(self, local_tmp: str, name: str) -> None:
        if self.is_local:
            os.replace(local_tmp, self.path(name))
        else:
            self.fs.put_file(local_tmp, self.path(name))
            os.unlink(local_tmp)

    def remove_stale_temps(self) -> int:
        if not self.is_local or not os.path.isdir(self.root):
            return 0
        stale = [p for p in Path(self.root).glob(".*.tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def open(self, name: str, mode: str = "rb"):
        return self.fs.open(self.path(name), mode)


def sha256_of(fileobj, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: fileobj.read(chunk), b""):
        digest.update(block)
    return digest.hexdigest()


def scan_shard(storage: Storage, name: str) -> tuple[int, str]:
    """``(sample count, sha256)`` of a shard, raising :class:`DatasetError` if it is truncated or corrupt."""
    keys = set()
    try:
        with storage.open(name) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or "." not in member.name:
                    raise DatasetError(f"{storage.path(name)}: unexpected entry {member.name!r}")
                keys.add(member.name.split(".", 1)[0])
                tar.extractfile(member).read()
        with storage.open(name) as f:
            digest = sha256_of(f)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{storage.path(name)} is truncated or corrupt ({exc}); "
                           "rerun the same `discopose render` command to re-render it") from None
    return len(keys), digest
