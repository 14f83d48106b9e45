"""Settings of the soak server when SOAK_CONN_MAX_AGE is set: the test settings
with persistent database connections, as production runs them (base/prod
default DB_CONN_MAX_AGE to 60; the test settings pin 0), optionally with
Django's connection health checks (SOAK_CONN_HEALTH_CHECKS=1)."""

from __future__ import annotations

from config.settings.test import *  # noqa: F403
from config.settings.test import DATABASES, env

DATABASES["default"]["CONN_MAX_AGE"] = env.int("SOAK_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("SOAK_CONN_HEALTH_CHECKS", default=False)
