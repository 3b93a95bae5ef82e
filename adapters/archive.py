"""Unpack an uploaded adapter archive (zip or tar, optionally gzipped) safely.

Only regular files are extracted, by name, into a fresh directory: absolute paths, `..`,
links and device files are refused, as are archives with too many members or too many bytes
once unpacked (zip bombs). The adapter files may sit at the root or in one top-level folder.
"""

from __future__ import annotations

import io
import lzma
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from adapters.errors import AdapterError, UploadTooLarge

MAX_MEMBERS = 16  # an adapter is 2 files (plus a README and folders at most)
# What reading a damaged archive raises besides zipfile's and tarfile's own errors: gzip and bz2
# report bad data as OSError, xz as LZMAError, deflate as zlib.error, a short stream as EOFError.
# Only reads are wrapped in it, so a full disk while writing stays the server error it is.
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError)
# Opening a zip or a member also parses headers: a mangled one can hold an offset before the
# file's start (ValueError) or a zip version newer than zipfile knows (NotImplementedError).
ZIP_DAMAGED = (*DAMAGED, ValueError, NotImplementedError)
# What zipfile can unpack (with the standard library's zlib, bz2 and lzma).
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _source(data: bytes | Path) -> Any:
    return io.BytesIO(data) if isinstance(data, bytes) else Path(data)


@dataclass
class Member:
    name: str
    size: int
    is_file: bool


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or ":" in name:
        raise AdapterError(f"archive member {name!r} has an unsafe path", "unsafe_archive")
    return path


def _corrupt(exc: BaseException) -> AdapterError:
    return AdapterError(f"archive is corrupt: {exc}", "not_an_archive")


def _write(
    src: IO[bytes], dest: Path, rel: PurePosixPath, name: str, written: int, max_bytes: int
) -> int:
    """Copy one member to `dest / rel`; return the bytes unpacked so far, `written` included.
    Real bytes are counted against `max_bytes`: a zip's declared sizes can lie."""
    if not rel.parts:  # `.` names the folder itself (`tar -C dir .` lists it as a folder)
        raise AdapterError(f"archive member {name!r} is a file without a name", "unsafe_archive")
    target = dest / rel
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = target.open("wb")
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise AdapterError(
            f"archive member {name!r} clashes with another member: a file and a folder of the "
            "same name",
            "unsafe_archive",
        ) from None
    with out:
        while True:
            try:
                block = src.read(1 << 20)
            except DAMAGED as exc:
                raise _corrupt(exc) from None
            if not block:
                return written
            written += len(block)
            if written > max_bytes:
                raise UploadTooLarge(f"archive unpacks to more than {max_bytes} bytes")
            out.write(block)


def extract_archive(data: bytes | Path, dest_root: Path, max_bytes: int) -> Path:
    """Unpack `data` (the archive's bytes, or a file holding them) into a new directory under
    `dest_root`; return the adapter directory inside it. The caller removes the new directory."""
    opener = _zip_members if zipfile.is_zipfile(_source(data)) else _tar_members
    dest = Path(tempfile.mkdtemp(prefix="upload-", dir=dest_root))
    try:
        opener(data, dest, max_bytes)
        return _adapter_dir(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _budget(members: list[Member], max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise AdapterError(
            f"archive has {len(members)} members, more than the limit of {MAX_MEMBERS}; "
            "archive only the adapter directory (adapter_config.json, adapter_model.safetensors)",
            "unsafe_archive",
        )
    total = sum(m.size for m in members if m.is_file)
    if total > max_bytes:
        raise UploadTooLarge(
            f"archive unpacks to {total} bytes, more than the limit of {max_bytes} bytes"
        )


def _zip_members(data: bytes | Path, dest: Path, max_bytes: int) -> None:
    try:
        zf = zipfile.ZipFile(_source(data))
    except ZIP_DAMAGED as exc:
        raise _corrupt(exc) from None
    with zf:
        infos = zf.infolist()
        members = [Member(i.filename, i.file_size, not i.is_dir()) for i in infos]
        _budget(members, max_bytes)
        written = 0
        for info in infos:
            rel = _check_name(info.filename)
            if info.is_dir():
                continue
            kind = (info.external_attr >> 16) & 0o170000
            if kind not in (0, 0o100000):  # 0: made on a system without Unix modes
                raise AdapterError(
                    f"archive member {info.filename!r} is not a regular file (links and devices "
                    "are refused)",
                    "unsafe_archive",
                )
            if info.flag_bits & 0x1:
                raise AdapterError(
                    f"archive member {info.filename!r} is encrypted; upload it without a password",
                    "unsupported_archive",
                )
            if info.compress_type not in ZIP_METHODS:
                raise AdapterError(
                    f"archive member {info.filename!r} uses zip compression method "
                    f"{info.compress_type}, which cannot be unpacked; use deflate (zip's default)",
                    "unsupported_archive",
                )
            try:
                src = zf.open(info)
            except ZIP_DAMAGED as exc:
                raise _corrupt(exc) from None
            with src:
                written = _write(src, dest, rel, info.filename, written, max_bytes)


def _tar_members(data: bytes | Path, dest: Path, max_bytes: int) -> None:
    try:
        if isinstance(data, bytes):
            tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
        else:
            tf = tarfile.open(name=data, mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, EOFError, OSError):
        raise AdapterError(
            "upload is neither a zip nor a tar archive of the adapter directory", "not_an_archive"
        ) from None
    with tf:
        # Read headers one by one and stop at the first that breaks a limit: listing all
        # members first would decompress a whole gzip bomb just to count it.
        infos: list[tarfile.TarInfo] = []
        try:
            for info in tf:
                infos.append(info)
                _budget([Member(i.name, i.size, i.isfile()) for i in infos], max_bytes)
        except DAMAGED as exc:
            raise _corrupt(exc) from None
        written = 0
        for info in infos:
            rel = _check_name(info.name)
            if info.isdir():
                continue
            if not info.isfile():
                raise AdapterError(
                    f"archive member {info.name!r} is not a regular file (links and devices "
                    "are refused)",
                    "unsafe_archive",
                )
            src = tf.extractfile(info)
            assert src is not None
            with src:
                written = _write(src, dest, rel, info.name, written, max_bytes)


def _adapter_dir(dest: Path) -> Path:
    if (dest / "adapter_config.json").exists():
        return dest
    children = [p for p in dest.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "adapter_config.json").exists():
        return children[0]
    raise AdapterError(
        "archive holds no adapter_config.json at its root or in a single top-level folder",
        "not_an_adapter",
    )
