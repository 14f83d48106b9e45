"""The message middleware builds its storage only for a request that uses it."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.contrib.messages.storage import default_storage
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory

import config.middleware

pytestmark = pytest.mark.django_db


@pytest.fixture
def built(monkeypatch) -> list[object]:
    made: list[object] = []

    def counting(request):
        made.append(request)
        return default_storage(request)

    monkeypatch.setattr(config.middleware, "default_storage", counting)
    return made


def _through(view, cookies=None):
    request = RequestFactory().get("/")
    request.COOKIES.update(cookies or {})
    chain = SessionMiddleware(config.middleware.LazyMessageMiddleware(view))
    return chain(request)


def test_a_request_that_never_touches_messages_builds_no_storage(built):
    response = _through(lambda request: HttpResponse("ok"))
    assert response.status_code == 200
    assert built == []
    assert "messages" not in response.cookies


def test_a_message_added_during_a_request_is_stored_with_its_response(built):
    def view(request):
        messages.success(request, "Saved.")
        return HttpResponse("ok")

    response = _through(view)
    assert len(built) == 1
    shown: list[str] = []

    def next_page(request):
        shown.extend(str(m) for m in messages.get_messages(request))
        return HttpResponse("ok")

    _through(next_page, cookies={"messages": response.cookies["messages"].value})
    assert shown == ["Saved."]
