"""Assemble and write OPA bundles: .manifest plus rendered files, deterministic and atomic.

Same input, same bytes: files are sorted, the revision is a content hash, tar
entries have fixed mtimes/owners/modes, and the gzip header carries no name or
time. Output appears whole or not at all (temp file/dir, then rename).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from regate.common.errors import RegateError
from regate.common.version import __version__

ROOTS = ["regate"]


def content_revision(files: dict[str, bytes]) -> str:
    """sha256 over every (path, bytes) pair, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        data = files[path]
        digest.update(f"{path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def manifest(files: dict[str, bytes], *, config_sha256: str, config_name: str) -> bytes:
    doc = {
        "revision": content_revision(files),
        "roots": ROOTS,
        "rego_version": 1,
        "metadata": {
            "regate_version": __version__,
            "config_file": config_name,
            "config_sha256": config_sha256,
        },
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def with_manifest(files: dict[str, bytes], *, config_sha256: str, config_name: str) -> dict[str, bytes]:
    out = dict(files)
    out[".manifest"] = manifest(files, config_sha256=config_sha256, config_name=config_name)
    return out


def tarball(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of `files`, byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(name="/" + path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


class OutputError(RegateError):
    """Raised when the bundle cannot be written to the requested place."""

    code = "output_error"
    status = 400


def _is_replaceable_dir(path: Path) -> bool:
    """Only an empty directory or an earlier regate bundle may be replaced."""
    if not any(path.iterdir()):
        return True
    try:
        return json.loads((path / ".manifest").read_text()).get("roots") == ROOTS
    except (OSError, ValueError, AttributeError):
        return False


def write(files: dict[str, bytes], out: str | os.PathLike) -> Path:
    """Write a `.tar.gz` bundle or a bundle directory at `out`, atomically."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: directory {parent} does not exist")
    if out.name.endswith(".tar.gz"):
        if out.is_dir():
            raise OutputError(f"{out}: is a directory")
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(tarball(files))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out
    if out.exists() and not (out.is_dir() and _is_replaceable_dir(out)):
        raise OutputError(f"{out}: exists and is not a regate bundle; refusing to replace it")
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        for path in sorted(files):
            target = tmp_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[path])
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.replace(out, old / "bundle")
        os.replace(tmp_dir, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out
