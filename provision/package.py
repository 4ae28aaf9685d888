"""Pack the project's sources from this checkout, the package every instance installs.

A source archive, not a wheel: each instance builds it with pip, compiling the C kernel for
its own platform (a wheel built here would carry this machine's binary). The archive is
deterministic (sorted entries, fixed times and owners), so the same sources give the same
bytes and the same S3 key: a second `provision up` finds the package it uploaded before
instead of adding another.
"""

from __future__ import annotations

import configparser
import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_PREFIX = "packages/"
# Every package setup.cfg installs, and the files its build reads.
SOURCES = [
    "node",
    "worker",
    "protocol",
    "client",
    "provision",
    "setup.cfg",
    "setup.py",
    "pyproject.toml",
    "README.md",
    "LICENSE",
]
SUFFIXES = {".py", ".c", ".cfg", ".toml", ".md", ".json", ".html"}


@dataclass(frozen=True)
class Package:
    path: Path
    digest: str  # sha256 of the archive

    @property
    def key(self) -> str:
        """S3 key: the content digest keeps versions apart; the file name is what pip expects."""
        return f"{PACKAGE_PREFIX}{self.digest[:16]}/{self.path.name}"


def source_files(root: Path = ROOT) -> list[Path]:
    files = []
    for name in SOURCES:
        item = root / name
        if not item.is_dir():
            files.append(item)
            continue
        files += [
            f
            for f in sorted(item.rglob("*"))
            if f.is_file()
            and (f.suffix in SUFFIXES or f.name.startswith("LICENSE"))
            and "__pycache__" not in f.parts
        ]
    return files


def build_sdist(out_dir: Path, root: Path = ROOT) -> Package:
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    base = f"{cfg['metadata']['name'].replace('-', '_')}-{cfg['metadata']['version']}"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in source_files(root):
            data = f.read_bytes()
            info = tarfile.TarInfo(f"{base}/{f.relative_to(root).as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o644, 315532800
            tar.addfile(info, io.BytesIO(data))
    path = out_dir / f"{base}.tar.gz"
    with open(path, "wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return Package(path, hashlib.sha256(path.read_bytes()).hexdigest())
