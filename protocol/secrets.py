"""Reading a secret (the cluster secret, an API key) from a file or, failing that, the
environment: a file keeps it out of the process list and of `ps e` output."""

from __future__ import annotations

import os
from typing import Mapping


class SecretUnreadable(Exception):
    """The named file could not be read; the message names the file and why."""


def read_secret(path: str | None, env_var: str, env: Mapping[str, str] | None = None) -> str:
    """The secret in `path` (surrounding whitespace removed) when a path is given, else
    `env_var` from `env` (default: the process environment), else ""."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as e:
            raise SecretUnreadable(f"cannot read {path}: {e.strerror}") from None
    return (os.environ if env is None else env).get(env_var, "")
