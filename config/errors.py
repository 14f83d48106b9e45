"""Site-wide 400/404/500: JSON under /api/ (the contract's body), HTML elsewhere."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views import defaults

from profiles.api.errors import json_bad_request, json_not_found, json_server_error


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # What Django refuses before any view runs (a Host not allowed, a
    # suspicious request): the contract's JSON body under /api/ too.
    if request.path.startswith("/api/"):
        return json_bad_request(request, exception)
    # Django's view never reads the exception; django-stubs require one.
    return defaults.bad_request(request, exception)  # type: ignore[arg-type]


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_server_error(request)
    return defaults.server_error(request)
