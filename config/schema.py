"""OpenAPI post-processing: every operation documents the contract's error body
for the failures any request may meet, so the schema describes what runs."""

from __future__ import annotations

from typing import Any

ERROR_BODY = {
    "type": "object",
    "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string", "example": "invalid"},
        "message": {"type": "string"},
        "details": {"type": "object", "additionalProperties": True},
    },
}

COMMON = {
    "400": "Invalid request: `details` maps fields to messages.",
    "401": "Missing, malformed, unknown, revoked or expired API key.",
    "403": "The key lacks the scope, or acts only for another profile.",
    "404": "No such object for this organization.",
    "405": "Method not allowed.",
    "406": "Not acceptable.",
    "413": "Request body too large.",
    "415": "Unsupported media type.",
    "429": "Rate limited (per API key) or a count budget would be exceeded; see Retry-After.",
}

# Failures only some operations meet, by operationId.
SPECIFIC = {
    "usage_record": {
        "409": "`idempotency_conflict`: this idempotency key was recorded with a different body.",
    },
    "quota_check": {
        "503": "`limiter_unavailable`: the limiter failed and the organization fails closed.",
    },
}


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_BODY
    ref = {"$ref": "#/components/schemas/Error"}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            extra = SPECIFIC.get(operation.get("operationId", ""), {})
            for code, description in (COMMON | extra).items():
                responses.setdefault(
                    code,
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )
    return result
