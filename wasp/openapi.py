"""HTTP routes declared once, as a table: the aiohttp router is built from it and
the OpenAPI document (`GET /openapi.json`) is generated from it, so the two
cannot disagree. The worker and the master both declare their APIs this way.
An API that two programs serve (the worker's slot operations, which the master
routes) is declared as `Endpoint`s, without handlers; each program `bind`s its
own handlers to them by name.

Bodies, query strings and path parameters are pydantic models or annotated
types: the handlers validate with them and the document is generated from
them, so a request the document calls valid is one the server accepts. A
documented path answers 405 with `Allow` for the methods it does not take.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from wasp import __version__
from wasp.errors import ApiError
from wasp.slots import SlotId
from wasp.validation import problems

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)

ERROR = {
    "type": "object",
    "required": ["ok", "error"],
    "properties": {"ok": {"type": "boolean", "enum": [False]}, "error": {"type": "string"}},
}
# Path parameters every API names the same way; a route may declare others in `params`.
PATH_TYPES: dict[str, Any] = {"slot": SlotId}
_PARAMETER = re.compile(r"\{(\w+)\}")


class InvalidInput(ApiError):
    """A path parameter, query or body the route's types refuse; the message says why."""

    status = 400


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI style: /api/accounts/{slot}/connect
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # path parameter -> its type
    responses: tuple[int, ...] = (200,)
    security: tuple[str, ...] = ()  # ApiInfo.security_schemes, any one of them suffices
    form: type[BaseModel] | None = None  # a multipart/form-data alternative to `body`
    name: str | None = None  # the document's operationId: what clients (the console) call it by


@dataclass(frozen=True)
class Endpoint:
    """A route declared without its handler, named: a program serving an API
    declared elsewhere binds its handlers to the names (`bind`)."""

    name: str
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    responses: tuple[int, ...] = (200,)
    security: tuple[str, ...] = ()
    form: type[BaseModel] | None = None

    def bind(self, handler: Handler) -> Route:
        return Route(
            self.method,
            self.path,
            handler,
            self.summary,
            self.body,
            self.query,
            self.params,
            self.responses,
            self.security,
            self.form,
            self.name,
        )


def bind(endpoints: Sequence[Endpoint], handlers: Mapping[str, Handler]) -> list[Route]:
    """Each endpoint with the handler of its name: every one, and nothing else,
    so a handler missing or misnamed stops the program as it starts."""
    names = [endpoint.name for endpoint in endpoints]
    twice = {name for name in names if names.count(name) > 1}
    missing, unknown = set(names) - set(handlers), set(handlers) - set(names)
    if missing or unknown or twice:
        raise ValueError(
            f"handlers do not match the endpoints: missing {sorted(missing)}, "
            f"unknown {sorted(unknown)}, declared twice {sorted(twice)}"
        )
    return [endpoint.bind(handlers[endpoint.name]) for endpoint in endpoints]


@dataclass(frozen=True)
class ApiInfo:
    title: str
    description: str
    reasons: dict[int, str]  # what each status code means in this API
    security_schemes: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def add_routes(app: web.Application, routes: list[Route], info: ApiInfo) -> None:
    """One resource per documented path: its methods, then 405 for any other method."""
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        by_path.setdefault(route.path, []).append(route)
    for path, group in by_path.items():
        resource = app.router.add_resource(path)
        for route in group:
            resource.add_route(route.method, route.handler)
        resource.add_route("*", _not_allowed(sorted({r.method for r in group})))
    document = openapi(routes, info)

    async def serve(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", serve)


def _not_allowed(methods: list[str]) -> Handler:
    allow = ", ".join(methods)

    async def not_allowed(request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error": f"method {request.method[:16]} not allowed here; use {allow}"},
            status=405,
            headers={"Allow": allow},
        )

    return not_allowed


def path_value(request: web.Request, name: str, kind: Any) -> Any:
    """A path parameter checked against its declared type (`InvalidInput` otherwise)."""
    value = request.match_info[name]
    try:
        return _adapter(kind).validate_strings(value)
    except ValidationError as error:
        reasons = "; ".join(found["msg"] for found in error.errors())
        raise InvalidInput(f"invalid {name} {value[:64]!r}: {reasons}") from None


def query_values(request: web.Request, model: type[Model]) -> Model:
    """The query string checked against the route's query model (`InvalidInput` otherwise)."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as error:
        raise InvalidInput(f"invalid query: {problems(error)}") from None


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    found = _ADAPTERS.get(id(kind))
    if found is None:
        found = _ADAPTERS[id(kind)] = TypeAdapter(kind)
    return found


def _parameters(route: Route | Endpoint) -> list[dict[str, Any]]:
    parameters = []
    for name in _PARAMETER.findall(route.path):
        kind = route.params.get(name, PATH_TYPES.get(name))
        if kind is None:
            raise ValueError(f"{route.path}: no type declared for {{{name}}}")
        schema = _adapter(kind).json_schema()
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.query is not None:
        model = route.query.model_json_schema()
        required = set(model.get("required", []))
        for name, schema in model["properties"].items():
            schema = {k: v for k, v in schema.items() if k != "title"}
            parameter = {"name": name, "in": "query", "required": name in required}
            if "description" in schema:
                parameter["description"] = schema.pop("description")
            parameter["schema"] = _absent_not_null(schema)
            parameters.append(parameter)
    return parameters


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None = None` in a query model means "may be left out": a query has no null."""
    branches = schema.get("anyOf")
    if branches is None:
        return schema
    kept = [b for b in branches if b.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**kept[0], **rest} if len(kept) == 1 else schema


def openapi(routes: Sequence[Route | Endpoint], info: ApiInfo) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR}
    used_schemes: set[str] = set()
    named: set[str] = set()
    for route in routes:
        operation: dict[str, Any] = {"summary": route.summary, "responses": {}}
        if route.name is not None:
            if route.name in named:
                raise ValueError(f"operation {route.name!r} declared twice")
            named.add(route.name)
            operation["operationId"] = route.name
        parameters = _parameters(route)
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
        if route.body is not None and route.form is not None:
            schemas[route.form.__name__] = route.form.model_json_schema()
            operation["requestBody"]["content"]["multipart/form-data"] = {
                "schema": {"$ref": f"#/components/schemas/{route.form.__name__}"}
            }
        if route.security:
            operation["security"] = [{name: []} for name in route.security]
            used_schemes.update(route.security)
        for code in route.responses:
            answer: dict[str, Any] = {"description": info.reasons[code]}
            if code >= 400:
                answer["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }
            operation["responses"][str(code)] = answer
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    components: dict[str, Any] = {"schemas": schemas}
    if used_schemes:
        components["securitySchemes"] = {
            name: scheme for name, scheme in info.security_schemes.items() if name in used_schemes
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": info.title, "version": __version__, "description": info.description},
        "paths": paths,
        "components": components,
    }
