"""The API's content negotiation answers as DRF's does, for every Accept header."""

from __future__ import annotations

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from costs.api.ledger_views import UsageExportApi
from profiles.api.negotiation import ContentNegotiation
from profiles.api.renderers import FastJSONRenderer

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "text/html",
    "text/csv",
    "application/json; indent=4",
    "text/html, application/json;q=0.9",
    "application/*",
]


def _renderer_sets() -> list[list]:
    export = [cls() for cls in UsageExportApi.renderer_classes]
    return [
        [JSONRenderer(), BrowsableAPIRenderer()],
        [FastJSONRenderer(), BrowsableAPIRenderer()],
        [BrowsableAPIRenderer(), JSONRenderer()],
        export,
    ]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("renderers", range(len(_renderer_sets())))
def test_the_renderer_chosen_is_drfs_choice(accept, renderers):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get("/api/v1/usage", **headers))
    chosen = _renderer_sets()[renderers]

    def choice(negotiation):
        try:
            renderer, media_type = negotiation.select_renderer(request, chosen)
        except Exception as exc:  # noqa: BLE001 - a refusal must be the same refusal
            return type(exc).__name__
        return type(renderer).__name__, media_type

    assert choice(ContentNegotiation()) == choice(DefaultContentNegotiation())


def test_a_request_without_accept_gets_json(api_a):
    resp = api_a.get("/api/v1/profiles")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "application/json"
