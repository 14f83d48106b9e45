"""Settings of the gunicorn server the benchmarks start: the test settings, with
persistent database connections as production runs them (``DB_CONN_MAX_AGE``
defaults to 60 in base/prod; the test settings pin it to 0, which would make
every benchmarked request open a new PostgreSQL connection).

``BENCH_CONN_MAX_AGE=0`` measures the test settings' behaviour instead; set
``BENCH_SETTINGS=config.settings.test`` to run the server on them verbatim."""

from __future__ import annotations

from config.settings.test import *  # noqa: F403
from config.settings.test import DATABASES, env

DATABASES["default"]["CONN_MAX_AGE"] = env.int("BENCH_CONN_MAX_AGE", default=60)
