"""The OpenAPI description of the REST API, made from its route table."""

import re
from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "what is wrong, naming the field"},
        "field": {"type": ["string", "null"]},
    },
}


def document(routes: Any, cookie: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler,
            "tags": [route.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", route.path)
            ]
            + [
                {"name": p.name, "in": "query", "description": p.description, "schema": p.schema()}
                for p in route.params
            ],
            "responses": {
                "200": {"description": "OK (JSON unless stated)"},
                "400": {"description": "Bad input", "content": _json(ERROR_SCHEMA)},
                "401": {"description": "No valid token or session", "content": _json(ERROR_SCHEMA)},
            },
        }
        if route.role is None:
            operation["security"] = []
        if route.role == "operator":
            operation["responses"]["403"] = {"description": "Needs the operator role"}
        if "{" in route.path:
            operation["responses"]["404"] = {"description": "No such item"}
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": _json(route.body)}
        if route.handler == "send":
            operation["responses"]["202"] = {"description": "Queued or sent, not yet answered"}
        operation["description"] = f"Role: {route.role or 'none'}."
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "evse central system",
            "version": "1",
            "description": "Operate OCPP 1.6J charging stations. List pages take limit and "
            "offset and answer {items, limit, offset, next_offset[, total]}.",
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": cookie},
            }
        },
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
