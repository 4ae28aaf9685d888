"""The body that carries many payloads in one HTTP request: a JSON manifest line (id, size,
sha256 of each), then the payloads' bytes back to back. Peers copy payloads to each other
with it, and workers read the payloads of their leased jobs with it.

Standard library only: the node and the worker both use it.
"""

from __future__ import annotations

import json

from protocol.ids import DIGEST, JOB_ID, digest_of

# Most jobs in one worker call (a lease, heartbeat, release, completion or payload read).
MAX_LEASE_JOBS = 64

# A request carrying payloads to a peer holds at most this many bytes, or one larger payload.
MAX_BATCH_BYTES = 8 << 20
MAX_BATCH_ITEMS = 1024
# Room for the JSON manifest of a full batch.
MAX_MANIFEST_BYTES = 256 << 10


class MalformedBatch(ValueError):
    """A batch body that does not follow the format; the message says what is wrong."""


def encode_batch(items: list[tuple[str, bytes, str]]) -> bytes:
    """Payloads (job id, data, sha256) as one body: a JSON manifest line, then the data."""
    manifest = [
        {"id": job_id, "size": len(data), "digest": digest} for job_id, data, digest in items
    ]
    return b"".join([json.dumps(manifest).encode(), b"\n", *(data for _, data, _ in items)])


def decode_batch(body: bytes) -> list[tuple[str, bytes, str]]:
    """The (job id, data, sha256) of each payload in an encode_batch body, each data checked
    against its sha256; MalformedBatch if the body is malformed or a payload does not match."""
    end = body.find(b"\n", 0, MAX_MANIFEST_BYTES)  # (partition would copy the payloads)
    try:
        manifest = json.loads(body[:end]) if end >= 0 else None
    except (ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, list) or not 1 <= len(manifest) <= MAX_BATCH_ITEMS:
        raise MalformedBatch(
            f"body: a JSON manifest line of 1 to {MAX_BATCH_ITEMS} payloads, "
            "then their bytes, is required"
        )
    items, at = [], end + 1
    for entry in manifest:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), str)
            or not JOB_ID.fullmatch(entry["id"])
            or not isinstance(entry.get("digest"), str)
            or not DIGEST.fullmatch(entry["digest"])
            or type(entry.get("size")) is not int
            or entry["size"] < 0
        ):
            raise MalformedBatch(
                "body: each manifest entry needs an 'id' (32 hex), a 'digest' "
                "(64 hex) and a 'size' (at least 0)"
            )
        data = body[at : at + entry["size"]]
        at += entry["size"]
        if len(data) != entry["size"] or digest_of(data) != entry["digest"]:
            raise MalformedBatch(
                f"body: payload {entry['id']} is short or does not match its digest"
            )
        items.append((entry["id"], data, entry["digest"]))
    if at != len(body):
        raise MalformedBatch("body: bytes left over after the payloads the manifest lists")
    return items
