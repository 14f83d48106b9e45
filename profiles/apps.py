from __future__ import annotations

from django.apps import AppConfig


class ProfilesConfig(AppConfig):
    name = "profiles"
    verbose_name = "Tenants and access"
    default_auto_field = "django.db.models.BigAutoField"
