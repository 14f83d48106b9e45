"""The contract's error body, in one place: every 4xx/5xx an API view produces is
``{"error": code, "message": text, "details": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise from services or views to answer with the contract's error body."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or {}
        self.headers = headers or {}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details or {}}


def flatten_errors(detail: Any) -> Any:
    """DRF's error detail (lists of ErrorDetail, nested dicts) -> field: message."""
    if isinstance(detail, dict):
        return {str(k): flatten_errors(v) for k, v in detail.items()}
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return " ".join(str(item) for item in detail)
        if len(detail) == 1:
            return flatten_errors(detail[0])
        return {str(i): flatten_errors(item) for i, item in enumerate(detail) if item}
    return str(detail)


_CODES = {
    exceptions.NotAuthenticated: ("unauthenticated", 401),
    exceptions.AuthenticationFailed: ("unauthenticated", 401),
    exceptions.PermissionDenied: ("forbidden", 403),
    exceptions.NotFound: ("not_found", 404),
    exceptions.MethodNotAllowed: ("method_not_allowed", 405),
    exceptions.NotAcceptable: ("not_acceptable", 406),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", 415),
    exceptions.Throttled: ("throttled", 429),
    exceptions.ParseError: ("invalid", 400),
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        set_rollback()
        return Response(
            error_body(exc.code, exc.message, exc.details),
            status=exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        # ObjectDoesNotExist: a service found its object deleted meanwhile.
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        detail = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, RequestDataTooBig):
        set_rollback()
        return Response(
            error_body("payload_too_large", "The request body is too large."), status=413
        )

    if isinstance(exc, exceptions.ValidationError):
        set_rollback()
        details = flatten_errors(exc.detail)
        if not isinstance(details, dict):
            details = {"non_field_errors": details}
        return Response(
            error_body("invalid", "The request is invalid; see details.", details), status=400
        )
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        code, status_code = "error", exc.status_code
        for cls, (c, s) in _CODES.items():
            if isinstance(exc, cls):
                code, status_code = c, s
                break
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
        if getattr(exc, "wait", None) is not None:
            headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
        api_detail = exc.detail
        message = str(api_detail) if not isinstance(api_detail, dict | list) else "Request failed."
        return Response(error_body(code, message), status=status_code, headers=headers)

    if isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable (restart, failover): say so, and when to retry.
        logger.warning("database unavailable: %s", exc)
        set_rollback()
        return Response(
            error_body("unavailable", "The service's database is unavailable; retry shortly."),
            status=503,
            headers={"Retry-After": "2"},
        )
    logger.exception("Unhandled API error", exc_info=exc)
    set_rollback()
    return Response(error_body("server_error", "Internal server error."), status=500)


def json_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_server_error(request):
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


def json_bad_request(request, exception=None):
    return JsonResponse(error_body("invalid", "Bad request."), status=400)
