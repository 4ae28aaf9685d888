"""Log output of a node: readable lines, or one JSON object per line for log collectors.

Job state changes are logged at INFO, one line per change of a group of jobs (an enqueue, a
lease, a worker's report, a requeue) naming them all, and so are scaling decisions; the ids
are also fields (`jobs`, `worker`, `workers`), which the JSON format carries as keys of their
own.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from pythonjsonlogger.json import JsonFormatter

# A log file is rotated at this size, and this many rotated files are kept.
FILE_BYTES = 64 << 20
FILE_BACKUPS = 5


def setup(level: str, fmt: str, node_id: str, file: str = "") -> None:
    """Log to stderr, and also to `file` (rotated) when given."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                file, maxBytes=FILE_BYTES, backupCount=FILE_BACKUPS, encoding="utf-8"
            )
        )
    formatter = _formatter(fmt, node_id)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=handlers, force=True)


def _formatter(fmt: str, node_id: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"node": node_id},
        )
    return logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s")
