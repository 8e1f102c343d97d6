"""The ``.edgec`` package: a zip of manifest.json, the compiled library and a report.

Format (version 1):

    manifest.json   format, versions, target, inputs/outputs, passes, model hash,
                    and the SHA-256 of every other member
    model.so        the compiled library for the target (a TVM Relax VM executable)
    report.json     the build report (ops, MACs, params, time per phase)

Reading checks the format tag and version, the member list (no paths, so no
zip-slip), sizes and checksums before anything is loaded. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.atomic import atomic_path
from edgec.errors import PackageError

FORMAT = "edgec-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LIBRARY = "model.so"
REPORT = "report.json"
# Members are flat names from this set; anything else marks a foreign or tampered file.
_MEMBER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_MAX_MEMBER_BYTES = 4 << 30


@dataclass
class PackageContents:
    manifest: dict[str, Any]
    report: dict[str, Any]
    files: dict[str, bytes]  # every member but manifest.json, checksum-verified


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_package(
    path: str | Path, manifest: dict[str, Any], files: dict[str, bytes], report: dict[str, Any]
) -> None:
    """Write a package atomically: a crash never leaves a partial ``path``."""
    members = dict(files)
    members[REPORT] = json.dumps(report, indent=2, sort_keys=True).encode()
    for name in members:
        if not _MEMBER_RE.match(name) or name == MANIFEST:
            raise ValueError(f"bad package member name {name!r}")
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {name: sha256(data) for name, data in sorted(members.items())}
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
            for name, data in sorted(members.items()):
                zf.writestr(name, data)


def read_package(path: str | Path) -> PackageContents:
    """Read and verify a package; any defect raises one ``PackageError`` line."""
    path = Path(path)
    if not path.is_file():
        raise PackageError(f"{path}: no such package file")
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path}: not an edgec package (not a zip file)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if MANIFEST not in names:
                raise PackageError(f"{path}: not an edgec package (no {MANIFEST})")
            for info in infos:
                if not _MEMBER_RE.match(info.filename):
                    raise PackageError(f"{path}: unsafe member path {info.filename!r} in package")
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise PackageError(f"{path}: member {info.filename!r} is implausibly large")
            if len(set(names)) != len(names):
                raise PackageError(f"{path}: duplicate members in package")
            manifest = _parse_manifest(zf.read(MANIFEST), path)
            listed = manifest["files"]
            extra = sorted(set(names) - set(listed) - {MANIFEST})
            if extra:
                raise PackageError(f"{path}: members not in the manifest: {', '.join(extra)}")
            files: dict[str, bytes] = {}
            for name, digest in listed.items():
                if name not in names:
                    raise PackageError(f"{path}: member {name!r} listed in manifest is missing")
                data = zf.read(name)
                if sha256(data) != digest:
                    raise PackageError(f"{path}: checksum mismatch for {name!r} (corrupted)")
                files[name] = data
    except PackageError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
            NotImplementedError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: corrupted package ({exc})") from None
    if LIBRARY not in files:
        raise PackageError(f"{path}: package holds no compiled library ({LIBRARY})")
    try:
        report = json.loads(files.get(REPORT, b"{}"))
    except ValueError:
        raise PackageError(f"{path}: {REPORT} is not valid JSON") from None
    return PackageContents(manifest=manifest, report=report, files=files)


def _parse_manifest(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise PackageError(f"{path}: {MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{path}: not an edgec package (manifest format tag missing)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(
            f"{path}: package format version {version!r} is not supported "
            f"(this edgec reads version {FORMAT_VERSION}); rebuild it with this edgec"
        )
    for key in ("files", "inputs", "outputs", "target"):
        if key not in manifest:
            raise PackageError(f"{path}: manifest lacks {key!r}")
    if not isinstance(manifest["files"], dict):
        raise PackageError(f"{path}: manifest 'files' is malformed")
    for name in manifest["files"]:
        if not isinstance(name, str) or not _MEMBER_RE.match(name):
            raise PackageError(f"{path}: unsafe member path {name!r} in manifest")
    return manifest
