"""The client's commands. Each returns the process exit code; records go to `out` as JSON
lines as they arrive, progress bars to stderr."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import asdict
from typing import IO, Any, Iterable

from tqdm import tqdm

from client.aio import AsyncClient, AsyncJob
from client.errors import InvalidRequest, JobFailed, TimedOut, UnknownJob
from client.nodes import Nodes
from protocol.ids import JOB_ID
from protocol.work import iterate_sha512

OK, FAILED = 0, 1
# One JSON line of input or output: a submitted job's record, a job as a node shows it.
Record = dict[str, Any]


def _emit(out: IO[str], record: Record) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _bar(total: int, desc: str, unit: str, show: bool) -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show, dynamic_ncols=True
    )


async def submit(
    client: AsyncClient,
    files: list[str],
    iterations: int,
    out: IO[str],
    progress: bool,
    batch_size: int,
    concurrency: int,
) -> int:
    """Upload the files as jobs, `batch_size` files per request (POST /enqueue/batch), up to
    `concurrency` requests at once. Each request keeps one Idempotency-Key for all its
    attempts, so a retry (on this node or another) never creates a second job."""
    gate = asyncio.Semaphore(concurrency)
    bar = _bar(len(files), "submitted", "file", progress)
    failures = 0

    async def batch(paths: list[str]) -> None:
        nonlocal failures
        items, readable = [], []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    items.append((f.read(), iterations))
                readable.append(path)
            except OSError as e:
                failures += 1
                bar.write(f"{path}: cannot read: {e.strerror}", file=sys.stderr)
                bar.update(1)
        if not items:
            return
        try:
            async with gate:
                jobs = await client.submit_many(items, key=uuid.uuid4().hex)
        except InvalidRequest as e:
            failures += len(readable)
            for path in readable:
                bar.write(f"{path}: not submitted: {e}", file=sys.stderr)
            bar.update(len(readable))
            return
        for path, job in zip(readable, jobs, strict=True):
            _emit(out, {"file": path, "id": job.id, "iterations": iterations, "after": job.after})
        bar.update(len(readable))

    try:
        chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        await asyncio.gather(*(batch(paths) for paths in chunks))
    finally:
        bar.close()
    if failures:
        print(f"{failures} of {len(files)} files not submitted", file=sys.stderr)
    return FAILED if failures else OK


def read_jobs(sources: Iterable[str]) -> list[Record]:
    """Jobs to wait for: ids, or files of JSON lines as `submit` writes them ('-': stdin)."""
    jobs: dict[str, Record] = {}
    for source in sources:
        if JOB_ID.fullmatch(source):
            jobs.setdefault(source, {"id": source})
            continue
        with open(source, encoding="utf-8") if source != "-" else sys.stdin as f:
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"id": line}
                if not isinstance(record, dict) or not JOB_ID.fullmatch(str(record.get("id"))):
                    raise ValueError(f"{source}:{n}: not a job id or a JSON line with an 'id'")
                jobs.setdefault(record["id"], record)
    return list(jobs.values())


def _verify(record: Record, result: str) -> bool | None:
    """Whether `result` is the iterated SHA-512 of the job's file, computed here."""
    path, iterations = record.get("file"), record.get("iterations")
    if not isinstance(path, str) or not isinstance(iterations, int):
        return None
    with open(path, "rb") as f:
        return iterate_sha512(f.read(), iterations) == result


async def wait(
    client: AsyncClient,
    jobs: list[Record],
    out: IO[str],
    progress: bool,
    verify: bool,
    timeout: float | None,
) -> int:
    """Wait until every job completed or failed, reading the completion feed from the
    position `submit` printed (jobs named by id alone are asked for once); one JSON line
    per finished job."""
    records = {j["id"]: j for j in jobs}
    handles = [
        AsyncJob(client, job_id, r["after"] if isinstance(r.get("after"), int) else None)
        for job_id, r in records.items()
    ]
    bar = _bar(len(records), "finished", "job", progress)
    bad = finished = 0
    try:
        async for job in client.as_completed(handles, timeout):
            record = records[job.id]
            line: Record = {k: record[k] for k in ("file", "iterations") if k in record}
            line["id"] = job.id
            try:
                result = await job.result()
            except JobFailed as e:
                bad += 1
                line.update({"status": "failed", "error": e.error})
            except UnknownJob as e:
                bad += 1
                line.update({"status": "unknown", "error": e.message})
            else:
                line.update({"status": "completed", "result": result})
                if verify:
                    line["verified"] = await asyncio.to_thread(_verify, record, result)
                    bad += line["verified"] is False
            _emit(out, line)
            finished += 1
            bar.update(1)
    except TimedOut:
        print(
            f"{len(records) - finished} jobs still unfinished after {timeout:g}s", file=sys.stderr
        )
        return FAILED
    finally:
        bar.close()
    if bad:
        print(f"{bad} of {len(jobs)} jobs failed, are unknown or did not verify", file=sys.stderr)
    return FAILED if bad else OK


async def follow(client: AsyncClient, after: int, count: int | None, out: IO[str]) -> int:
    """Print the completion feed after position `after` as it grows (`count` entries, or
    until interrupted)."""
    if count == 0:
        return OK
    seen = 0
    async for completion in client.completions(after):
        _emit(out, {k: v for k, v in asdict(completion).items() if v is not None})
        seen += 1
        if count is not None and seen >= count:
            break
    return OK


async def pull(nodes: Nodes, top: int, out: IO[str]) -> int:
    answer = await nodes.request("POST", "/pullCompleted", params={"top": str(top)})
    if answer.status != 200:
        print(answer, file=sys.stderr)
        return FAILED
    for job in answer.body:
        _emit(out, job)
    return OK


async def status(nodes: Nodes, out: IO[str], as_json: bool) -> int:
    answer = await nodes.request("GET", "/dashboard/data")
    if answer.status != 200:
        print(answer, file=sys.stderr)
        return FAILED
    if as_json:
        _emit(out, answer.body)
        return OK
    members = answer.body["members"]
    rows = [("NODE", "ROLE", "HEALTH", "TERM", "APPLIED", "URL")]
    for m in members:
        if m["reachable"]:
            rows.append(
                (
                    m["node"],
                    m["role"],
                    "ok" if m["healthy"] else m["health"],
                    str(m["raft"]["term"]),
                    str(m["raft"]["last_applied"]),
                    m["url"],
                )
            )
        else:
            rows.append(("?", "unreachable", m["error"], "-", "-", m["url"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    leader = next((m for m in members if m["reachable"] and m["role"] == "leader"), None)
    source = leader or next(m for m in members if m.get("self"))
    q, w = source["queue"], source["worker_states"]
    out.write(
        f"\nleader: {leader['node'] if leader else 'none'}\n"
        f"queue: {q['queued']} queued, {q['running']} running, {q['completed']} "
        f"completed, {q['failed']} failed\n"
        f"workers: {w['busy']} busy, {w['idle']} idle, {w['booting']} booting\n"
    )
    scaling = source.get("scaling")
    if scaling:
        idle = scaling["idle_timeout"]
        last = scaling["last_decision"]
        out.write(
            f"scaling: {scaling['backend']} backend, idle timeout "
            f"{'none' if idle is None else f'{idle:.0f}s'}"
            f"{', last decision: ' + last['reason'] if last else ''}\n"
        )
    return OK
