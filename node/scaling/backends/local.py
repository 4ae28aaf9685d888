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
import time
import uuid

log = logging.getLogger(__name__)


class LocalBackend:
    name = "local"
    start_cost = 0.5

    def __init__(self, manager_urls: list[str], secret: str, node_id: str, idle_timeout: float):
        self._urls = manager_urls
        self._secret = secret
        self._prefix = node_id.replace(":", "-")
        self._idle_timeout = idle_timeout
        self._procs: dict[str, tuple[subprocess.Popen[bytes], float]] = {}

    def launch(self, count: int) -> list[str]:
        started = []
        for _ in range(count):
            worker_id = f"{self._prefix}-local-{uuid.uuid4().hex[:8]}"
            env = {**os.environ, "WQ_SECRET": self._secret, "WQ_WORKER_BACKEND": self.name}
            cmd = [
                sys.executable,
                "-m",
                "worker",
                "--managers",
                ",".join(self._urls),
                "--id",
                worker_id,
                "--idle-timeout",
                str(self._idle_timeout),
            ]
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
            self._procs[worker_id] = (proc, time.time())
            log.info("worker %s started (pid %d)", worker_id, proc.pid)
            started.append(worker_id)
        return started

    def running(self) -> dict[str, float]:
        for worker_id, (proc, _) in list(self._procs.items()):
            code = proc.poll()
            if code is not None:
                log.info("worker %s exited with code %d", worker_id, code)
                del self._procs[worker_id]
        return {w: started for w, (_, started) in self._procs.items()}

    def terminate(self, worker_ids: list[str]) -> None:
        for worker_id in worker_ids:
            entry = self._procs.pop(worker_id, None)
            if entry is not None and entry[0].poll() is None:
                log.warning("worker %s stopped answering; killing it", worker_id)
                entry[0].kill()
                entry[0].wait()

    def boot_log(self, worker_id: str) -> str | None:
        return None  # a local worker writes to the node's own stderr

    def stop_all(self, timeout: float = 5.0) -> None:
        for proc, _ in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for worker_id, (proc, _) in self._procs.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0fs; killing it", worker_id, timeout)
                proc.kill()
                proc.wait()
        self._procs.clear()
