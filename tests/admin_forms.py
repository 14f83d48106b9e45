"""What a browser posts for an admin page's form, read from the page; and an
operator's POST, for calling a ModelAdmin's methods as its views do."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from django.db import models
from django.http import HttpRequest
from django.test import RequestFactory


class FormReader(HTMLParser):
    """What a browser sends for the admin's form (``<form id="<model>_form">``):
    each named input, select and textarea as rendered. ``names`` also holds the
    fields the browser would leave out (an unchecked box)."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, list[str]] = {}
        self.names: list[str] = []
        self._select: tuple[str, bool, list[str], list[str]] | None = None
        self._option: dict[str, Any] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def _add(self, name: str, value: str | None) -> None:
        if name not in self.names:
            self.names.append(name)
        if value is not None:
            self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text").lower()
            if kind in {"checkbox", "radio"}:
                self._add(name, a.get("value", "on") if "checked" in a else None)
            elif kind not in {"submit", "button", "image", "reset", "file"}:
                self._add(name, a.get("value", ""))
        elif tag == "select" and name:
            self._select = (name, "multiple" in a, [], [])
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
        elif tag == "textarea" and name:
            self._textarea = (name, [])

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option["text"] += data
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "option" and self._option is not None and self._select is not None:
            value = self._option["value"]
            value = self._option["text"].strip() if value is None else value
            self._select[2].append(value)
            if self._option["selected"]:
                self._select[3].append(value)
            self._option = None
        elif tag == "select" and self._select is not None:
            name, multiple, options, selected = self._select
            if not selected and not multiple:
                selected = options[:1]  # what a browser sends when none is selected
            self._add(name, None)
            for value in selected:
                self._add(name, value)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            name, parts = self._textarea
            # HTML drops the newline that follows <textarea>; the parser keeps it.
            self._add(name, "".join(parts).removeprefix("\n"))
            self._textarea = None


def read_form(page: str, model: type[models.Model]) -> FormReader:
    reader = FormReader(f"{model._meta.model_name}_form")
    reader.feed(page)
    return reader


def post_form(client: Any, url: str, model: type[models.Model], **changes: str) -> Any:
    """Post the admin page at ``url`` back as a browser would, with ``changes``
    (input name -> value) made to what it showed."""
    form = read_form(client.get(url).content.decode(), model)
    return client.post(url, {**form.data, **{name: [v] for name, v in changes.items()}})


def operator_post() -> HttpRequest:
    """A POST request from an operator (a superuser), for calling a
    ModelAdmin's save or delete methods directly."""
    from tests.factories import UserFactory

    request = RequestFactory().post("/")
    request.user = UserFactory(is_superuser=True, is_staff=True)
    return request
