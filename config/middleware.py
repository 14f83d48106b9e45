"""Middleware of our own."""

from __future__ import annotations

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse
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
