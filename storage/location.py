"""Paths that may be local folders or object-store URIs (s3://, gs://, abfs://, hdfs://, ...), behind one
small interface built on pyarrow's filesystems.

Credentials and endpoints come from the standard places each filesystem reads (for S3: the AWS_* variables,
AWS_ENDPOINT_URL included, the shared config files or an instance profile; for GCS:
GOOGLE_APPLICATION_CREDENTIALS or the metadata server), never from our arguments. Schemes pyarrow has no
native filesystem for are served through fsspec when the matching package is installed.

Object stores have no atomic rename, so `write_bytes` writes in place there (an upload becomes visible only when
it completes) and through a hidden temporary name plus rename on local disks; callers that need several files to
appear together write a small commit record last (see rows.parts).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs


class StorageError(OSError):
    """A location that cannot be used; the message names it."""


def is_uri(location: str | os.PathLike) -> bool:
    """True for `scheme://...` locations other than file://."""
    text = os.fspath(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem: `fs` and the path inside it; `uri` is how users wrote it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *names: str) -> Location:
        if isinstance(self.fs, pafs.LocalFileSystem):
            path = os.path.join(self.path, *names)
            return Location(self.fs, path, path)
        return Location(self.fs, posixpath.join(self.path, *names), posixpath.join(self.uri, *names))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/").replace("\\", "/"))

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot be reached ({e})") from e

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file; readers never see a half-written one (see the module docstring)."""
        if self.local:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = os.path.join(os.path.dirname(self.path), f".{self.name}.{uuid.uuid4().hex[:8]}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def open_output(self):
        """A writable binary stream; on a local disk it writes a hidden file renamed into place on close."""
        if self.local:
            return _LocalAtomicWriter(self.path)
        return self.fs.open_output_stream(self.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path)

    def list(self, recursive: bool = False) -> Iterator[pafs.FileInfo]:
        """Files below this folder (none when it does not exist), in name order."""
        selector = pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot list it ({e})") from e
        yield from sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def child(self, info: pafs.FileInfo) -> Location:
        """The Location of a FileInfo that `list` returned."""
        rel = info.path[len(self.path.rstrip("/")) :].lstrip("/")
        return self.join(*rel.split("/")) if rel else self


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file at a local path or at any URI pyarrow's (or fsspec's) filesystems understand."""
    if is_uri(path):
        return locate(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def locate(location: str | os.PathLike) -> Location:
    """A local path (made absolute) or a URI -> Location. Raises StorageError for unknown schemes."""
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if not is_uri(text):
        path = os.path.abspath(text)
        return Location(pafs.LocalFileSystem(), path, path)
    text = text.rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as native_error:  # a scheme pyarrow has no filesystem for
        scheme = text.partition("://")[0]
        try:
            import fsspec
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            inner = fsspec.filesystem(scheme)
            fs, path = PyFileSystem(FSSpecHandler(inner)), inner._strip_protocol(text)
        except (ImportError, ValueError) as e:
            raise StorageError(f"{text}: no filesystem for {scheme}:// ({native_error}; fsspec: {e})") from e
    return Location(fs, path, text)


class _LocalAtomicWriter:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data) -> int:
        return self.f.write(data)

    def close(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.f.close()
            os.unlink(self.tmp)
