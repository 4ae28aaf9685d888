"""Local backend: workers are subprocesses of the leader node (`python -m worker`).

They stay in the node's process group, so stopping the group stops them. If the node dies
alone they keep working against the other managers, the next leader counts them from their
polls, and they exit once no manager has answered for their orphan timeout.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

log = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, manager_urls: list[str], secret: str, node_id: str,
                 idle_timeout: float):
        self._urls = manager_urls
        self._secret = secret
        self._prefix = node_id.replace(":", "-")
        self._idle_timeout = idle_timeout
        self._procs: dict[str, subprocess.Popen] = {}

    def launch(self, count: int) -> list[str]:
        started = []
        for _ in range(count):
            worker_id = f"{self._prefix}-local-{uuid.uuid4().hex[:8]}"
            env = {**os.environ, "WQ_SECRET": self._secret}
            cmd = [sys.executable, "-m", "worker", "--managers", ",".join(self._urls),
                   "--id", worker_id, "--idle-timeout", str(self._idle_timeout)]
            self._procs[worker_id] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
            log.info("worker %s started (pid %d)", worker_id, self._procs[worker_id].pid)
            started.append(worker_id)
        return started

    def reap(self) -> list[str]:
        """Ids of the children that exited since the last call."""
        exited = []
        for worker_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is not None:
                log.info("worker %s exited with code %d", worker_id, code)
                del self._procs[worker_id]
                exited.append(worker_id)
        return exited

    def running(self) -> list[str]:
        """Ids of the children alive at the last reap."""
        return list(self._procs)

    def stop_all(self, timeout: float = 5.0) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for worker_id, proc in self._procs.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0fs; killing it", worker_id, timeout)
                proc.kill()
                proc.wait()
        self._procs.clear()
