"""Profiles API: list and read the spenders of the key's organization."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from profiles.api.base import TenantApiView
from profiles.api.pagination import CappedLimitOffsetPagination, page_parameters, paginated
from profiles.models import Profile
from profiles.selectors import profile_list


class ProfileOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Profile
        fields = ["external_id", "display_name", "active", "created_at"]


class ProfileListApi(TenantApiView):
    scopes = {"*": "read"}

    @extend_schema(
        parameters=page_parameters(),
        responses=paginated("PaginatedProfiles", ProfileOutputSerializer(many=True)),
        operation_id="profiles_list",
    )
    def get(self, request: Request) -> Response:
        profiles = profile_list(org=self.org)
        if (bound := self.bound_profile) is not None:
            profiles = profiles.filter(pk=bound.pk)
        paginator = CappedLimitOffsetPagination()
        page = paginator.paginate_queryset(profiles, request, view=self)
        return paginator.get_paginated_response(ProfileOutputSerializer(page, many=True).data)


class ProfileDetailApi(TenantApiView):
    scopes = {"*": "read"}

    @extend_schema(responses=ProfileOutputSerializer, operation_id="profiles_retrieve")
    def get(self, request: Request, external_id: str) -> Response:
        profile = self.acting_profile(external_id, create=False)
        return Response(ProfileOutputSerializer(profile).data)
