"""Read datasets written by :mod:`discopose.datasets.generate`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from discopose._errors import DatasetError
from discopose.datasets.format import FORMAT, FORMAT_VERSION, MANIFEST, decode_sample
from discopose.datasets.storage import Storage, read_shard, scan_shard
from discopose.geometry.symmetry import Symmetry


@dataclass
class DatasetInfo:
    """A dataset's manifest plus where its shards are."""

    url: str
    manifest: dict

    @property
    def camera_names(self) -> list[str]:
        return [camera["name"] for camera in self.manifest["cameras"]]

    @property
    def symmetry(self) -> Symmetry:
        return Symmetry.from_dict(self.manifest["object"]["symmetry"])

    @property
    def num_samples(self) -> int:
        return self.manifest["num_samples"]

    @property
    def shard_urls(self) -> list[str]:
        storage = Storage(self.url)
        return [storage.url_of(shard["name"]) for shard in self.manifest["shards"]]

    def summary(self) -> str:
        m = self.manifest
        obj = m["object"]
        cams = ", ".join(f"{c['name']} {c['width_px']}x{c['height_px']}" for c in m["cameras"])
        return "\n".join([
            f"dataset     {self.url}",
            f"format      {m['format']} v{m['format_version']} (discopose {m['discopose_version']})",
            f"samples     {m['num_samples']} in {len(m['shards'])} shards of {m['samples_per_shard']}"
            f"{'' if m['complete'] else '  (INCOMPLETE: rerun discopose render to finish)'}",
            f"seed        {m['seed']}",
            f"object      {obj['name']}, diameter {obj['diameter_m'] * 1000:.1f} mm, symmetry {obj['symmetry']['kind']}",
            f"cameras     {cams}",
            f"appearance  {m['config']['object']['appearance']}; images {m['image_format']}",
        ])


def open_dataset(url: str, require_complete: bool = True) -> DatasetInfo:
    """Read and check a dataset's manifest; raises :class:`DatasetError` with the fix on problems."""
    storage = Storage(url)
    manifest = storage.read_json(MANIFEST)
    if manifest is None:
        raise DatasetError(f"{url} has no {MANIFEST}; is it a dataset written by `discopose render`?")
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{url}: manifest format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(f"{url}: dataset format v{manifest['format_version']} is newer than this discopose "
                           f"reads (v{FORMAT_VERSION}); upgrade discopose")
    if require_complete and not manifest.get("complete"):
        raise DatasetError(f"{url} is incomplete (an interrupted render); rerun the same `discopose render` "
                           "command to finish it")
    return DatasetInfo(url=url, manifest=manifest)


def check_shards(info: DatasetInfo, verify_hashes: bool = False) -> None:
    """Fail now, with the shard's name, rather than an epoch into training: every shard the manifest
    lists exists with its recorded size, and with ``verify_hashes`` its bytes match the sha256 and it
    holds the recorded number of samples."""
    storage = Storage(info.url)
    for shard in info.manifest["shards"]:
        where = storage.url_of(shard["name"])
        size = storage.size(shard["name"])
        if size is None:
            raise DatasetError(f"{where} is missing; rerun the `discopose render` command that made the dataset "
                               "to re-render it")
        if shard.get("bytes") is not None and size != shard["bytes"]:
            raise DatasetError(f"{where} is {size} bytes but the manifest says {shard['bytes']} (truncated or "
                               "replaced); run `discopose inspect --verify` on the dataset, then rerun the "
                               "`discopose render` command that made it")
        if verify_hashes:
            count, digest = scan_shard(storage, shard["name"])
            if digest != shard["sha256"] or count != shard["num_samples"]:
                raise DatasetError(f"{where} does not match the manifest (sha256 or sample count; corrupted after "
                                   "it was written); rerun the `discopose render` command that made the dataset "
                                   "to re-render it")


def iter_raw_samples(info: DatasetInfo, shard_names: list[str] | None = None) -> Iterator[dict]:
    """Raw samples (``{"__key__", field: bytes}``) in index order; each shard's bytes are checked
    against the manifest's sha256 as they stream."""
    storage = Storage(info.url)
    expected = {shard["name"]: shard.get("sha256") for shard in info.manifest["shards"]}
    for name in shard_names or list(expected):
        yield from shard_samples(storage, name, expected.get(name))


def shard_samples(storage: Storage, name: str, sha256: str | None) -> Iterator[dict]:
    """One shard's raw samples, its bytes checked against ``sha256`` as they stream."""
    return group_samples(read_shard(storage, name, sha256), storage.url_of(name))


def group_samples(members, url: str) -> Iterator[dict]:
    """Tar members ``(key.field, bytes)`` in order -> ``{"__key__": key, "__url__": shard, field: bytes}``."""
    current: dict = {}
    for member, data in members:
        key, field = member.split(".", 1)
        if current and current["__key__"] != key:
            yield current
            current = {}
        current.update({"__key__": key, "__url__": url})
        current[field] = data
    if current:
        yield current


def iter_samples(info: DatasetInfo, limit: int | None = None) -> Iterator[dict]:
    """Decoded samples (see :func:`discopose.datasets.format.decode_sample`)."""
    for count, raw in enumerate(iter_raw_samples(info)):
        if limit is not None and count >= limit:
            return
        yield decode_sample(raw)
