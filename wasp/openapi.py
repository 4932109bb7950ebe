"""HTTP routes declared once, as a table: the aiohttp router is built from it and
the OpenAPI document (`GET /openapi.json`) is generated from it, so the two
cannot disagree. The worker and the master both declare their APIs this way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from wasp import __version__
from wasp.slots import SLOT_PATTERN

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ERROR = {
    "type": "object",
    "required": ["ok", "error"],
    "properties": {"ok": {"type": "boolean", "enum": [False]}, "error": {"type": "string"}},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI style: /api/accounts/{slot}/connect
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    responses: tuple[int, ...] = (200,)


@dataclass(frozen=True)
class ApiInfo:
    title: str
    description: str
    reasons: dict[int, str]  # what each status code means in this API


def add_routes(app: web.Application, routes: list[Route], info: ApiInfo) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    document = openapi(routes, info)

    async def serve(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", serve)


def openapi(routes: list[Route], info: ApiInfo) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR}
    for route in routes:
        operation: dict[str, Any] = {"summary": route.summary, "responses": {}}
        parameters = []
        if "{slot}" in route.path:
            parameters.append(
                {
                    "name": "slot",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": SLOT_PATTERN},
                }
            )
        if "{name}" in route.path:
            parameters.append(
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9_-]{1,128}\\.[a-z0-9]{1,5}$",
                    },
                }
            )
        if "{id}" in route.path:
            parameters.append(
                {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
            )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[route.body.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                    }
                },
            }
        for code in route.responses:
            answer: dict[str, Any] = {"description": info.reasons[code]}
            if code >= 400:
                answer["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }
            operation["responses"][str(code)] = answer
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": info.title, "version": __version__, "description": info.description},
        "paths": paths,
        "components": {"schemas": schemas},
    }
