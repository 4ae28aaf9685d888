"""Log output of a node: readable lines, or one JSON object per line for log collectors.

Job state changes are logged at INFO, one line per change of a group of jobs (an enqueue, a
lease, a worker's report, a requeue) naming them all, and so are scaling decisions; the ids
are also fields (`jobs`, `worker`, `workers`), which the JSON format carries as keys of their
own.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def setup(level: str, fmt: str, node_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"node": node_id},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
