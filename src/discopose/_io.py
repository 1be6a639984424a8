"""Output files: folders made as needed, atomic writes (readers never see a half-written file), and
one-line errors naming the path when the file system refuses."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from discopose._errors import DiscoposeError


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is a file rather than a folder, if any."""
    return next((parent for parent in reversed(path.parents) if parent.exists() and not parent.is_dir()), None)


def output_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) for outputs; a user-facing error when it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiscoposeError(f"{path} is a file, not a folder; choose another path")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise DiscoposeError(f"cannot create the folder {path}: {blocker} is a file, not a folder; "
                             "choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create the folder {path} ({exc.strerror}); choose a path you can write to"
        raise DiscoposeError(message) from exc
    return path


def output_file(path: str | os.PathLike) -> Path:
    """``path`` ready to be written: its folder created like ``mkdir -p``, as a user expects of an output
    file. A folder in its place or a file in the way of its folder is a user-facing error."""
    path = Path(path)
    if path.is_dir():
        raise DiscoposeError(f"{path} is a folder; give the path of a file to write (it may be inside that folder)")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise DiscoposeError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    return output_folder(path.parent) / path.name


def describe_path_error(exc: OSError) -> str:
    """One line naming the path of an OS error about ``exc.filename`` and what to do about it."""
    path = Path(exc.filename)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocker = path if path.exists() and not path.is_dir() else _file_in_the_way(path)
        if blocker is not None:
            return f"{blocker} is a file where a folder is needed; choose another path"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder where a file is needed; give a file path"
    return f"{path}: {exc.strerror}; check the path and its permissions"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``; the folder
    is created if missing. OS errors (no permission, disk full) become one-line :class:`DiscoposeError`."""
    path = output_file(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; datasets and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DiscoposeError(f"cannot write {path} ({exc.strerror or exc}); choose a path you can write to "
                                 "and check the free space") from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
