"""The API described as OpenAPI 3.1: served at /openapi.json and published as schemas/openapi.json.

Written by hand next to the routes (a test checks that every route is described and every described
path is routed); the shapes are the ones `views` builds.
"""

from __future__ import annotations

from typing import Any

from daemon import __version__

__all__ = [
    "LIST_PAGE",
    "MAX_PAGE",
    "MAX_POSITION",
    "MAX_SAMPLE_ROWS",
    "SAMPLE_BYTES",
    "TOKEN_COOKIE",
    "openapi_spec",
]

_ERROR = {"$ref": "#/components/responses/Error"}
_OBJ: dict[str, Any] = {"type": "object"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return _json(schema, description) | {"headers": _LINK}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


TOKEN_COOKIE = "llmtraind_token"  # noqa: S105 (a cookie name, not a secret)
"""Where a browser keeps `[api] token` for the status page (see middleware.py)."""
MAX_POSITION = 2**62
"""The largest seq or byte offset a query may name: far past any real log, and within int64."""
MAX_PAGE = 5000
"""The most entries one page of a list (`limit`) may hold: 5,000 jobs are some 3.6 MB of JSON, built
a chunk at a time (`paging.encode_chunked`)."""
LIST_PAGE = 500
"""A list's page when `limit` is not given."""
MAX_SAMPLE_ROWS = 20
SAMPLE_BYTES = 256 * 1024
"""A dataset's sample rows are read from this much of its start: a few rows to look at, never a
whole file, however long its rows are."""


def _int_query(
    name: str, description: str, minimum: int, maximum: int = MAX_POSITION, default: int | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_JOB_PARAM = {
    "name": "job",
    "in": "path",
    "required": True,
    "description": "the job's id (digits) or name (the newest job of that name)",
    "schema": {"type": "string", "minLength": 1},
}
_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_LIMIT = _int_query("limit", "the most entries in the page", 1, MAX_PAGE, LIST_PAGE)
_AFTER_JOB = _int_query("after", "start after this job id (a page's `next`)", 0, default=0)
_AFTER_NAME = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "start after this name (a page's `next`)",
    "schema": {"type": "string", "default": ""},
}
_NEXT_JOB = {"type": ["integer", "null"], "description": "the `after` of the next page; null at the end"}
_NEXT_NAME = {"type": ["string", "null"], "description": "the `after` of the next page; null at the end"}
_NEXT_SEQ = {
    "type": ["integer", "null"],
    "description": "the `after` (a seq) of the next page; null at the end",
}
_LINK = {
    "Link": {
        "description": 'RFC 8288 `<url>; rel="next"`: the next page (only when there is one)',
        "schema": {"type": "string"},
    }
}
_PAGING = (
    f"Lists come a page at a time: `limit` entries (default {LIST_PAGE}, at most {MAX_PAGE}) after the "
    "cursor `after`; `next` is the `after` of the next page, null on the last (`next_after` says the "
    'same), and a page with a next one has a `Link: <url>; rel="next"` header.'
)
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "where a reconnecting client left off; anything but a non-negative integer is ignored",
    "schema": {"type": "string"},
}
_SSE = {
    "description": "an SSE stream (text/event-stream)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("401",),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, **(extra or {})}
    for code in errors:
        responses[code] = _ERROR
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    return {"get": op}


def _job_route(
    summary: str, ok: dict[str, Any], params: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return _get(summary, ok, params=[_JOB_PARAM, *(params or [])], errors=("400", "401", "404"))


def _schemas() -> dict[str, Any]:
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Status": {
            "type": "object",
            "required": ["version", "uptime_s", "last_seq", "healthy", "gpus", "jobs", "intake"],
            "properties": {
                "version": {"type": "string"},
                "uptime_s": {"type": "number"},
                "last_seq": {"type": "integer"},
                "healthy": {"type": "boolean"},
                "gpus": {"type": "object", "required": ["count", "memory_total_mib", "leased", "free"]},
                "executor": {
                    "type": "object",
                    "required": ["kind", "slurm"],
                    "description": "who places runs (local | slurm); for Slurm the cluster: partitions, "
                    "nodes, nodes_up, cpus, gpus, jobs by Slurm state, and sinfo's error if any",
                },
                "jobs": counts,
                "intake": _OBJ,
                "disk": {"$ref": "#/components/schemas/Disk"},
            },
        },
        "Disk": {
            "type": "object",
            "description": "free space under the state folder against [runs] min_free_disk_gib: while "
            "`ok` is false no run starts and the jobs that could start wait with `reason`",
            "properties": {
                "path": {"type": "string"},
                "free_bytes": {"type": "integer"},
                "total_bytes": {"type": "integer"},
                "min_free_bytes": {"type": "integer"},
                "ok": {"type": "boolean"},
                "reason": {"type": "string"},
            },
        },
        "Job": {
            "type": "object",
            "required": ["id", "name", "state", "reason", "task_type", "project", "progress"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "state": {
                    "enum": ["queued", "running", "succeeded", "failed", "cancelled", "interrupted", "paused"]
                },
                "reason": {"type": "string"},
                "task_type": {"type": "string"},
                "project": {"type": "string"},
                "progress": {
                    "type": ["object", "null"],
                    "properties": {
                        "step": {"type": "integer"},
                        "max_steps": {"type": "integer"},
                        "percent": {"type": "number"},
                        "eta_s": {"type": ["number", "null"]},
                    },
                },
                "serving": {
                    "type": ["object", "null"],
                    "description": "where a running deploy job answers (null for other jobs)",
                    "properties": {
                        "url": {"type": "string"},
                        "openai_base": {"type": "string"},
                        "models": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
        "Event": {
            "type": "object",
            "required": ["seq", "stream", "version", "ts", "type", "data"],
            "properties": {
                "seq": {"type": "integer", "minimum": 1},
                "stream": {"type": "string"},
                "version": {"type": "integer", "minimum": 1},
                "ts": {"type": "number"},
                "type": {"type": "string"},
                "data": _OBJ,
            },
        },
        "Gpu": {
            "type": "object",
            "required": ["index", "uuid", "name", "memory_total_mib", "memory_used_mib", "utilization_pct"],
            "properties": {
                "index": {"type": "integer"},
                "uuid": {"type": "string"},
                "name": {"type": "string"},
                "memory_total_mib": {"type": "integer"},
                "memory_used_mib": {"type": "integer"},
                "memory_free_mib": {"type": "integer"},
                "utilization_pct": {"type": "integer"},
                "lease": {"type": ["object", "null"]},
                "processes": {"type": "array", "items": _OBJ},
                "foreign_processes": {"type": "integer"},
            },
        },
    }


def _jobs_paths() -> dict[str, Any]:
    job_states = ["queued", "running", "succeeded", "failed", "cancelled", "interrupted", "paused"]
    one = "|".join(job_states)
    list_of = {
        "type": "object",
        "required": ["jobs", "next"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next": {
                "type": ["integer", "null"],
                "description": "the `after` (or, given `before`, the `before`) of the next page; null at the end",
            },
            "next_after": _NEXT_JOB,
            "next_before": {
                "type": ["integer", "null"],
                "description": "given `before`: the `before` of the next page; null at the end",
            },
        },
    }
    events = {
        "type": "object",
        "required": ["events", "next", "next_after"],
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "next": _NEXT_SEQ,
            "next_after": _NEXT_SEQ,
        },
    }
    after = _int_query("after", "start after this byte offset (Last-Event-ID wins when both are given)", 0)
    return {
        "/v1/jobs": _get(
            "jobs by id, optionally of some states or one project, a page at a time: oldest first "
            "(`after`, answered with `next_after`) or newest first (`before`, answered with `next_before`)",
            _page(list_of, "a page of jobs"),
            params=[
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "description": "one state, or several joined by commas (`succeeded,failed,cancelled`)",
                    "schema": {"type": "string", "pattern": f"^({one})(,({one}))*$"},
                },
                {"name": "project", "in": "query", "required": False, "schema": {"type": "string"}},
                _AFTER_JOB,
                _int_query("before", "newest first, from the job below this id (0: ignored)", 0, default=0),
                _LIMIT,
            ],
            errors=("400", "401"),
        ),
        "/v1/jobs/{job}": _job_route(
            "one job: command line, metrics summary, artifacts, exit", _json(_ref("Job"), "the job")
        ),
        "/v1/jobs/{job}/events": _job_route(
            "the job's events by seq, a page at a time",
            _page(events, "a page of its events, oldest first"),
            [_int_query("after", "start after this seq (a page's `next`)", 0, default=0), _LIMIT],
        ),
        "/v1/jobs/{job}/metrics": _job_route(
            "every metrics record swift logged, all attempts", _json(_OBJ, "records")
        ),
        "/v1/jobs/{job}/artifacts": _job_route(
            "checkpoints, adapters, merged models", _json(_OBJ, "artifacts")
        ),
        "/v1/jobs/{job}/logs": _job_route(
            "a page of the job's log by byte offset (whole lines)",
            _json(
                {"type": "object", "required": ["job", "offset", "next_offset", "size", "text"]},
                "the page",
            ),
            [_int_query("offset", "byte offset", 0), _int_query("limit", "bytes", 1, 1 << 20)],
        ),
        "/v1/jobs/{job}/logs/stream": {
            "get": {
                "summary": "SSE: the job's log, a line per event, `id:` = the byte offset after the line; "
                "ends (event `end`) after the last line of a finished job",
                "parameters": [_JOB_PARAM, after, _LAST_EVENT_ID],
                "responses": {
                    "200": _SSE,
                    "204": {"description": "the job has finished and the client has its whole log"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            }
        },
    }


def _paths() -> dict[str, Any]:
    named = _get("one dataset", _json(_OBJ, "the dataset"), params=[_NAME_PARAM], errors=("401", "404"))
    project_jobs = {
        "type": "object",
        "required": ["name", "jobs", "next", "next_after"],
        "properties": {
            "name": {"type": "string"},
            "jobs": {"type": "array", "items": _ref("Job")},
            "next": _NEXT_JOB,
            "next_after": _NEXT_JOB,
        },
    }
    project = _get(
        "one project's jobs by id, a page at a time",
        _page(project_jobs, "a page of the project's jobs"),
        params=[_NAME_PARAM, _AFTER_JOB, _LIMIT],
        errors=("400", "401", "404"),
    )
    datasets = {
        "type": "object",
        "required": ["datasets", "next", "next_after"],
        "properties": {
            "datasets": {"type": "array", "items": _OBJ},
            "next": _NEXT_NAME,
            "next_after": _NEXT_NAME,
        },
    }
    projects = {
        "type": "object",
        "required": ["projects", "next", "next_after"],
        "properties": {
            "projects": {"type": "array", "items": _OBJ},
            "next": _NEXT_NAME,
            "next_after": _NEXT_NAME,
        },
    }
    page = {
        "type": "object",
        "required": ["events", "next", "next_after"],
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "next": _NEXT_SEQ,
            "next_after": {
                "type": "integer",
                "description": "where to poll from next: the last seq in the page, or `after` when it is empty",
            },
        },
    }
    gpus = {
        "type": "object",
        "required": ["gpus", "probed_s_ago"],
        "properties": {
            "gpus": {"type": "array", "items": _ref("Gpu")},
            "probed_s_ago": {"type": ["number", "null"]},
        },
    }
    health = {
        "type": "object",
        "required": ["ok", "reason"],
        "properties": {"disk": {"$ref": "#/components/schemas/Disk"}},
    }
    return {
        "/healthz": {
            "get": {
                "summary": "liveness (no token needed)",
                "security": [],
                "responses": {
                    "200": _json(health, "the event log can be written and intake is not held up"),
                    "503": _json(health, "one of them is not, and why (`intake: ...` for intake)"),
                },
            }
        },
        "/v1/status": _get(
            "version, uptime, last event seq, GPU summary, job counts",
            _json(_ref("Status"), "the daemon's status"),
        ),
        **_jobs_paths(),
        "/v1/datasets": _get(
            "each dataset once, under its name, with all its names; a page at a time, by name",
            _page(datasets, "a page of datasets"),
            params=[_AFTER_NAME, _LIMIT],
            errors=("400", "401"),
        ),
        "/v1/datasets/{name}": named,
        "/v1/datasets/{name}/rows": _get(
            f"the dataset's first rows as swift reads them (JSONL), read from its first {SAMPLE_BYTES} bytes: "
            "a row cut there or not JSON comes as `text`",
            _json(
                {
                    "type": "object",
                    "required": ["name", "sha256", "rows_total", "available", "rows"],
                    "properties": {
                        "available": {"type": "boolean", "description": "false: its file is gone"},
                        "rows": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["row", "data", "text", "cut"],
                                "properties": {
                                    "row": {"type": "integer", "minimum": 1},
                                    "data": {"description": "the row, parsed; null when it is `text`"},
                                    "text": {"type": ["string", "null"]},
                                    "cut": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
                "the rows",
            ),
            params=[_NAME_PARAM, _int_query("limit", "rows", 1, MAX_SAMPLE_ROWS, 5)],
            errors=("400", "401", "404"),
        ),
        "/v1/datasets/{name}/jobs": _get(
            "the jobs that read the dataset (any attempt, or queued to), by id, a page at a time",
            _page(
                {
                    "type": "object",
                    "required": ["jobs", "next", "next_after"],
                    "properties": {
                        "jobs": {"type": "array", "items": _OBJ},
                        "next": _NEXT_JOB,
                        "next_after": _NEXT_JOB,
                    },
                },
                "a page of jobs: id, name, state, task_type",
            ),
            params=[_NAME_PARAM, _AFTER_JOB, _LIMIT],
            errors=("400", "401", "404"),
        ),
        "/v1/projects": _get(
            "jobs grouped by project, a page at a time, by name",
            _page(projects, "a page of projects"),
            params=[_AFTER_NAME, _LIMIT],
            errors=("400", "401"),
        ),
        "/v1/projects/{name}": project,
        "/v1/gpus": _get(
            "per GPU: memory, utilisation, our lease, foreign processes", _json(gpus, "the last probe")
        ),
        "/v1/notify": _get(
            "the notification targets: kind, where (scheme and host only), on, projects, cursor, lag, "
            "counts and last error; never a secret",
            _json(
                {
                    "type": "object",
                    "required": ["targets", "last_seq"],
                    "properties": {
                        "targets": {"type": "array", "items": _OBJ},
                        "last_seq": {"type": "integer"},
                    },
                },
                "every [[notify]] target",
            ),
        ),
        "/v1/events": _get(
            "a page of the event log",
            _page(page, "events with seq > after"),
            params=[
                _int_query("after", "seq", 0, default=0),
                _int_query("limit", "events", 1, MAX_PAGE, 100),
            ],
            errors=("400", "401"),
        ),
        "/v1/events/stream": _get(
            "SSE: the event log, `id:` = seq, then live",
            _SSE,
            params=[_int_query("after", "start after this seq (Last-Event-ID wins)", 0), _LAST_EVENT_ID],
            errors=("400", "401", "503"),
        ),
        "/v1/state": _get(
            "the whole state folded up to a seq",
            _json(_OBJ, "the state"),
            params=[_int_query("at", "seq (default: now)", 0)],
            errors=("400", "401"),
        ),
        "/metrics": _get(
            "Prometheus metrics",
            {
                "description": "text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
        "/openapi.json": _get("this document", _json(_OBJ, "OpenAPI 3.1")),
        "/": {
            "get": {
                "summary": "the status page: GPUs, queue with reasons, running and finished jobs, a job's "
                "curves, log, artifacts and events (#/jobs/NAME), runs compared (#/compare/1,2), datasets "
                "(#/datasets/NAME), events in words",
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "description": "[api] token, once: kept as a cookie, then a 303 to /",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _html("HTML, fed by /v1/events/stream"),
                    "303": {"description": "the token was right and is now a cookie"},
                    "401": _html("how to give the token"),
                },
            }
        },
    }


def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llmtraind",
            "version": __version__,
            "description": "The read-only API of llmtraind. Every method but GET and HEAD answers 405. With "
            "[api] token set, every route but /healthz needs `Authorization: Bearer <token>`. " + _PAGING,
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {"Error": _json(_ref("Error"), 'an error: {"error": {"code", "message"}}')},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": TOKEN_COOKIE},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
    }
