"""Middleware of our own."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils.functional import SimpleLazyObject, empty


class LazyMessageMiddleware(MessageMiddleware):
    """Django's message middleware with the storage made on first use.

    Django builds it for every request: a cookie storage, a session storage
    and a cookie signer, about 2.5% of an API request's time, and the API
    never has a message. The admin's pages use it as before, and only a
    request that touched it stores it back."""

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        messages = getattr(request, "_messages", None)
        # LazyObject keeps its object in _wrapped (``empty`` until first use);
        # django-stubs do not declare the attribute.
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:  # type: ignore[attr-defined]
            return response
        return super().process_response(request, response)


class NulQueryMiddleware:
    """A query string carrying a NUL character is refused with a 400.

    PostgreSQL text cannot hold NUL, so a filter value with one (an admin
    changelist's ``?provider=%00``, Django's own admin filters and those of
    installed apps alike) fails in the database, a server error. The API
    refuses it with field messages of its own (``TenantApiView``), so its
    paths are left to it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/") and nul_parameters(request.GET):
            raise BadRequest("The query string contains a NUL character.")
        return self.get_response(request)


def nul_parameters(query: QueryDict) -> list[str]:
    """The names of the query parameters whose name or a value holds a NUL
    character, which PostgreSQL text cannot hold."""
    return [
        name for name, values in query.lists() if "\x00" in name or any("\x00" in v for v in values)
    ]
