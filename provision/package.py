"""Build the project's wheel from this checkout, the package every instance installs.

The build runs on a copy of the sources (the checkout stays clean) with a fixed
SOURCE_DATE_EPOCH, so the same sources give the same bytes and the same S3 key: a second
`provision up` finds the package it uploaded before instead of adding another.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["node", "worker", "provision", "setup.cfg", "pyproject.toml", "README.md"]


@dataclass(frozen=True)
class Package:
    path: Path
    digest: str             # sha256 of the wheel

    @property
    def key(self) -> str:
        """S3 key: the content digest keeps versions apart, the file name stays a wheel name."""
        return f"packages/{self.digest[:16]}/{self.path.name}"


def build_wheel(out_dir: Path, root: Path = ROOT) -> Package:
    with tempfile.TemporaryDirectory(prefix="wq-build-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            item = root / name
            if item.is_dir():
                shutil.copytree(item, src / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(item, src / name)
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(src)],
            env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the package failed:\n{done.stderr.strip()}")
    (wheel,) = sorted(out_dir.glob("replicated_work_queue-*.whl"))
    return Package(wheel, hashlib.sha256(wheel.read_bytes()).hexdigest())
