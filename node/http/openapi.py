"""The OpenAPI 3.0 document of the public API, served at /openapi.json with this node's limits."""

from __future__ import annotations

from typing import Any

from node.config import NodeConfig
from protocol.ids import JOB_ID_PATTERN, RESULT_PATTERN

Json = dict[str, Any]

MAX_TOP = 1000
DEFAULT_TOP = 10
MAX_FEED_LIMIT = 1000
DEFAULT_FEED_LIMIT = 100
MAX_POSITION = 2**62


def _error(description: str, retry: bool = False) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {
                "schema": {"type": "string"},
                "description": "seconds to wait before retrying",
            }
        }
    return response


def idempotency_key(description: str) -> Json:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    }


def document(cfg: NodeConfig) -> Json:
    unavailable = _error("no leader or no majority within the request timeout", retry=True)
    unauthorized = _error("missing or wrong X-API-Key")
    secured: list[Json] = [{"apiKey": []}] if cfg.api_key else []
    job_id = {"type": "string", "pattern": f"^{JOB_ID_PATTERN}$"}
    after = {
        "type": "integer",
        "nullable": True,
        "description": "a completion-feed position: the job's completion comes after it "
        "(GET /completed?after=...); null when the job finished before the feed existed",
    }

    def iterations(description: str | None = None) -> Json:
        param: Json = {
            "name": "iterations",
            "in": "query",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": cfg.max_iterations},
        }
        return param | ({"description": description} if description else {})

    wait = {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "seconds to wait; the request may take this long beyond the request timeout",
        "schema": {"type": "number", "minimum": 0, "maximum": cfg.max_wait, "default": 0},
    }
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "Replicated work queue",
            "version": "1",
            "description": "Iterated SHA-512 jobs on a replicated cluster. Any node "
            "answers every request.",
        },
        "paths": {
            "/enqueue": {
                "put": {
                    "summary": "Enqueue a payload; answers once the job is durable.",
                    "security": secured,
                    "parameters": [
                        iterations(),
                        idempotency_key("a retry with the same key returns the first job's id"),
                    ],
                    "requestBody": {
                        "required": False,
                        "description": "the payload; an empty body is an empty payload",
                        "content": {
                            "application/octet-stream": {
                                "schema": {
                                    "type": "string",
                                    "format": "binary",
                                    "minLength": 0,
                                    "maxLength": cfg.max_body_bytes,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the job is durable",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["id", "after"],
                                        "properties": {"id": job_id, "after": after},
                                    }
                                }
                            },
                        },
                        "400": _error(
                            "bad iterations, malformed Idempotency-Key or unknown query parameter"
                        ),
                        "401": unauthorized,
                        "413": _error(f"body larger than {cfg.max_body_bytes} bytes"),
                        "422": _error("Idempotency-Key already used for another request"),
                        "429": _error("the queue is at its capacity", retry=True),
                        "503": unavailable,
                    },
                }
            },
            "/enqueue/batch": {
                "post": {
                    "summary": "Enqueue many payloads, one per part of a multipart/form-data "
                    "body (curl -F p=@a.bin -F p=@b.bin), as one command: all the jobs are "
                    "made or none. Iterations: the query's `iterations` for every part, or a "
                    "part's own `X-Iterations` header.",
                    "security": secured,
                    "parameters": [
                        iterations(
                            "for every part; may be left out when every part has an "
                            "X-Iterations header"
                        ),
                        idempotency_key(
                            "a retry with the same key and parts returns the first batch's ids"
                        ),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["p"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "p": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": cfg.max_batch_jobs,
                                            "items": {"type": "string", "format": "binary"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "every job is durable; their ids, in part order",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["ids", "after"],
                                        "properties": {
                                            "ids": {"type": "array", "items": job_id},
                                            "after": after,
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error(
                            "not multipart/form-data, no parts or more than "
                            f"{cfg.max_batch_jobs}, a part without iterations, a bad "
                            "X-Iterations, malformed Idempotency-Key or unknown query parameter"
                        ),
                        "401": unauthorized,
                        "413": _error(
                            f"a part larger than {cfg.max_body_bytes} bytes, or parts larger "
                            f"than {cfg.max_batch_bytes} bytes together"
                        ),
                        "422": _error("Idempotency-Key already used for another request"),
                        "429": _error("the queue has no room for every part", retry=True),
                        "503": unavailable,
                    },
                }
            },
            "/pullCompleted": {
                "post": {
                    "summary": "The most recently completed jobs, newest first.",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "top",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_TOP,
                                "default": DEFAULT_TOP,
                            },
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "completed jobs",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Completed"},
                                    }
                                }
                            },
                        },
                        "400": _error("bad top or unknown query parameter"),
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/completed": {
                "get": {
                    "summary": "The completion feed: every completion and failure has a "
                    "position (1, 2, 3...), the same on every node. Answers the ones after "
                    "`after` in order, and the position to ask from next; with `wait`, waits "
                    "up to that many seconds for one when there is none yet.",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_POSITION,
                                "default": 0,
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_FEED_LIMIT,
                                "default": DEFAULT_FEED_LIMIT,
                            },
                        },
                        wait,
                    ],
                    "responses": {
                        "200": {
                            "description": "the completions after `after`, in order",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Feed"}
                                }
                            },
                        },
                        "400": _error("bad after, limit or wait, or unknown query parameter"),
                        "401": unauthorized,
                        "410": _error(
                            f"positions after `after` are no longer kept (this node keeps the "
                            f"newest {cfg.max_finished} finished jobs)"
                        ),
                        "503": unavailable,
                    },
                }
            },
            "/work/{id}": {
                "get": {
                    "summary": "One job. With `wait`, answers once the job completed or failed "
                    "on this node, or with its state after that many seconds.",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        wait,
                    ],
                    "responses": {
                        "200": {
                            "description": "the job",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Job"}}
                            },
                        },
                        "400": _error("bad wait or unknown query parameter"),
                        "401": unauthorized,
                        "404": _error("no such job"),
                        "503": unavailable,
                    },
                }
            },
            "/status": {
                "get": {
                    "summary": "This node's role, Raft indexes, queue counts and workers.",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "status",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        },
                        "400": _error("unknown query parameter"),
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this node (text exposition format). The API "
                    "key may also be sent as 'Authorization: Bearer <key>'.",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "400": _error("unknown query parameter"),
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/dashboard/data": {
                "get": {
                    "summary": "What the dashboard at / shows: the members' status, this node's "
                    "recent history and the latest completions.",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "dashboard data",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["now", "members", "history", "recent"],
                                    }
                                }
                            },
                        },
                        "400": _error("unknown query parameter"),
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The live dashboard (one HTML page; asks for the API key if one is "
                    "set).",
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "400": _error("unknown query parameter"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "200 when the node knows a leader and is caught up.",
                    "responses": {
                        "200": {
                            "description": "healthy",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "400": _error("unknown query parameter"),
                        "503": {
                            "description": "not healthy",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Completed": {
                    "type": "object",
                    "required": ["id", "result", "iterations", "completed_at"],
                    "properties": {
                        "id": job_id,
                        "result": {"type": "string", "pattern": f"^{RESULT_PATTERN}$"},
                        "iterations": {"type": "integer"},
                        "completed_at": {"type": "number"},
                    },
                },
                "Feed": {
                    "type": "object",
                    "required": ["completions", "next", "last"],
                    "properties": {
                        "completions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "position",
                                    "id",
                                    "status",
                                    "iterations",
                                    "finished_at",
                                ],
                                "properties": {
                                    "position": {"type": "integer"},
                                    "id": job_id,
                                    "status": {"type": "string", "enum": ["completed", "failed"]},
                                    "iterations": {"type": "integer"},
                                    "finished_at": {"type": "number"},
                                    "result": {
                                        "type": "string",
                                        "pattern": f"^{RESULT_PATTERN}$",
                                    },
                                    "error": {"type": "string"},
                                },
                            },
                        },
                        "next": {"type": "integer", "minimum": 0},
                        "last": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "the last position this node has given",
                        },
                    },
                },
                "Job": {
                    "type": "object",
                    "required": ["id", "status", "iterations", "size", "enqueued_at", "attempts"],
                    "properties": {
                        "id": job_id,
                        "status": {
                            "type": "string",
                            "enum": ["queued", "running", "completed", "failed"],
                        },
                        "iterations": {"type": "integer"},
                        "size": {"type": "integer"},
                        "enqueued_at": {"type": "number"},
                        "attempts": {"type": "integer"},
                        "worker": {"type": "string", "nullable": True},
                        "leased_at": {"type": "number", "nullable": True},
                        "result": {"type": "string"},
                        "completed_at": {"type": "number"},
                        "error": {"type": "string", "nullable": True},
                        "failed_at": {"type": "number"},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["node", "pid", "role", "leader", "raft", "queue", "workers"],
                    "properties": {
                        "node": {"type": "string"},
                        "pid": {"type": "integer"},
                        "role": {"type": "string"},
                        "leader": {"type": "string", "nullable": True},
                        "raft": {"type": "object"},
                        "queue": {"type": "object"},
                        "workers": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["healthy", "reason"],
                    "properties": {"healthy": {"type": "boolean"}, "reason": {"type": "string"}},
                },
            },
        },
    }
    return doc
