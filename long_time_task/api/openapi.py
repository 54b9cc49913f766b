"""The OpenAPI schema's submit request, documented per task type from the registry's JSON Schemas; the docs
page (Swagger UI) that shows it; their errors, in the API's JSON; and the schema made to say exactly what the
server does where drf-spectacular cannot infer it."""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from ..registry import LongTimeTaskRegister
from .errors import JsonErrorsMixin

EVENT_STREAM = "text/event-stream"


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "long_time_task.api.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>` (or `Token <token>`); `manage.py create_api_token`.",
        }


class SchemaView(JsonErrorsMixin, SpectacularAPIView):
    """``GET /api/schema/``: the schema (YAML, or JSON with ``?format=json``); its errors in JSON."""


class ApiDocsView(JsonErrorsMixin, SpectacularSwaggerSplitView):
    """Swagger UI under a strict Content-Security-Policy: its start-up script is a second request (the split
    view) instead of an inline script, and the page's few rules come from a stylesheet instead of an inline
    ``<style>``. For logged-in users; an anonymous request gets the API's JSON 401, not an HTML page."""

    template_name = "long_time_task/swagger_ui.html"


def require_event_stream_accept(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: an operation that answers only ``text/event-stream`` (the event
    streams) serves it only to a client that asks for it, and answers 406 to any other (see events.py).

    OpenAPI has no field for "this Accept is required" (it says tools SHALL ignore a header parameter named
    Accept), but a parameter is the only place a client or a fuzzer reads it from; so the schema declares
    ``Accept`` as a required header with the one value the server streams for. DRF's ``?format=`` override,
    which drf-spectacular lists, is left out: it is another way to ask (``?format=event-stream`` streams
    without the header), and a schema cannot say "one or the other".
    """
    for item in result.get("paths", {}).values():
        operation = item.get("get")
        if not operation:
            continue
        ok = operation.get("responses", {}).get("200", {}).get("content", {})
        if list(ok) != [EVENT_STREAM]:
            continue
        operation["parameters"] = [
            p
            for p in operation.get("parameters", [])
            if (p.get("in"), p.get("name")) not in {("header", "Accept"), ("query", "format")}
        ] + [
            {
                "in": "header",
                "name": "Accept",
                "required": True,
                "schema": {"type": "string", "enum": [EVENT_STREAM]},
                "description": "A stream is served only to a client that asks for one (EventSource does); "
                "anything else answers 406 `not_acceptable`.",
            }
        ]
    return result


def _component_name(task_type: str) -> str:
    return "Submit_" + "".join(part.capitalize() for part in task_type.replace("-", "_").split("_"))


def add_task_type_params(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the submit body, and a schedule's, become a ``oneOf`` over the task
    types the schema's reader may submit, discriminated by ``task_type``, each with its own ``params`` schema."""
    user = getattr(request, "user", None)
    configs = [
        c
        for c in LongTimeTaskRegister.get_all_tasks().values()
        if not c.server_only and (user is None or c.may_submit(user))
    ]
    components = result.setdefault("components", {}).setdefault("schemas", {})
    refs = {}
    for config in sorted(configs, key=lambda c: c.name):
        params = copy.deepcopy(dict(config.param_schema)) if config.param_schema else {"type": "object"}
        params.pop("$schema", None)
        params.setdefault("type", "object")
        name = _component_name(config.name)
        components[name] = {
            "type": "object",
            "description": config.description,
            "properties": {"task_type": {"type": "string", "enum": [config.name]}, "params": params},
            "required": ["task_type", "params"] if params.get("required") else ["task_type"],
            "additionalProperties": False,
        }
        refs[config.name] = f"#/components/schemas/{name}"
    submit: dict[str, Any] = {"oneOf": [{"$ref": ref} for ref in refs.values()]}
    if refs:
        submit["discriminator"] = {"propertyName": "task_type", "mapping": refs}
    bodies = {"tasks_submit": submit, **schedule_bodies(components, refs)}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body and operation.get("operationId") in bodies:
                for media in body.get("content", {}).values():
                    media["schema"] = bodies[operation["operationId"]]
    return result


def schedule_bodies(components: dict[str, Any], submits: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A schedule's create and change bodies, per task type as the submit's: the schedule's own fields (from
    ``ScheduleWriteSerializer``) with the type's ``params``. A create names its type, and exactly one of
    ``cron``, ``interval_seconds`` or ``run_at``; a change gives at most one of them, and ``task_type`` and
    ``params`` together or neither."""
    write = components.pop("ScheduleWrite", None)
    components.pop("PatchedScheduleWrite", None)
    if write is None:
        return {}
    own = {k: v for k, v in write["properties"].items() if k not in ("task_type", "params")}
    timings = ("cron", "interval_seconds", "run_at")
    creates: dict[str, str] = {}
    changes: dict[str, str] = {}
    for task_type, ref in submits.items():
        submit = components[ref.rsplit("/", 1)[1]]
        properties = {**submit["properties"], **own}
        name = ref.rsplit("/", 1)[1].replace("Submit_", "Schedule_")
        components[name] = {
            "type": "object",
            "properties": properties,
            "required": ["name", *submit["required"]],
            "additionalProperties": False,
            "oneOf": [{"required": [timing]} for timing in timings],
        }
        creates[task_type] = f"#/components/schemas/{name}"
        components[name + "_Change"] = {
            "type": "object",
            "properties": properties,
            "required": ["task_type", "params"],
            "additionalProperties": False,
        }
        changes[task_type] = f"#/components/schemas/{name}_Change"
    components["ScheduleChange"] = {"type": "object", "properties": own, "additionalProperties": False}
    one_timing_at_most = {
        "not": {"anyOf": [{"required": [a, b]} for i, a in enumerate(timings) for b in timings[i + 1 :]]}
    }
    create: dict[str, Any] = {"oneOf": [{"$ref": ref} for ref in creates.values()]}
    if creates:
        create["discriminator"] = {"propertyName": "task_type", "mapping": creates}
    change = {
        "allOf": [
            {"oneOf": [{"$ref": "#/components/schemas/ScheduleChange"}, *({"$ref": r} for r in changes.values())]},
            one_timing_at_most,
        ]
    }
    return {"schedules_create": create, "schedules_update": change}
