"""Job ids, payload digests and results: how they are made and what they look like."""

from __future__ import annotations

import hashlib
import re
import uuid

# Patterns as regular expressions (fullmatch) and as JSON-schema patterns, written once.
JOB_ID_PATTERN = "[0-9a-f]{32}"  # uuid4().hex, as new_job_id makes them
DIGEST_PATTERN = "[0-9a-f]{64}"  # sha256 of a payload, hex
RESULT_PATTERN = "[0-9a-f]{128}"  # the final SHA-512 digest, hex

JOB_ID = re.compile(JOB_ID_PATTERN)
DIGEST = re.compile(DIGEST_PATTERN)
RESULT = re.compile(RESULT_PATTERN)


def new_job_id() -> str:
    return uuid.uuid4().hex


def digest_of(data: bytes) -> str:
    """The digest a payload travels and is stored with (sha256, hex)."""
    return hashlib.sha256(data).hexdigest()
