"""The errors a request can end in, each with the HTTP status it maps to."""

from __future__ import annotations


class QueueError(Exception):
    """Base of the errors answered to clients; `status` is the HTTP status code."""

    status = 500
    retry_after: int | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(QueueError):
    status = 400


class Unauthorized(QueueError):
    status = 401


class JobNotFound(QueueError):
    status = 404


class Gone(QueueError):
    """Asked for what this node no longer keeps (completions dropped by retention)."""

    status = 410


class PayloadTooLarge(QueueError):
    status = 413


class KeyReused(QueueError):
    """An Idempotency-Key already used for a different payload or iteration count."""

    status = 422


class QueueFull(QueueError):
    status = 429
    retry_after = 5


class NoQuorum(QueueError):
    """No leader, no majority, or the cluster did not answer within the request timeout."""

    status = 503
    retry_after = 1


class NotLeader(NoQuorum):
    """A leader-only duty reached a node that is not (or no longer) the leader."""


class ConfigError(ValueError):
    """A configuration value is missing or out of range; the message names the field."""
