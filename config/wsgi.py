from __future__ import annotations

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
application = get_wsgi_application()

# Everything loaded so far (modules, settings, the URLconf and every view it
# imports) lives as long as the process: move it out of the garbage
# collector's sight, or each full collection walks it again (tens of ms per
# 1,000-event batch).
get_resolver().url_patterns  # noqa: B018 - imports the views now, not on the first request
gc.freeze()
# A young-generation collection every 10,000 net allocations, not every 700: a
# 1,000-event batch allocates a few hundred thousand objects that die with
# the request, and each collection stops every thread of the worker. Batch
# ingest under gunicorn gained 15-30% (tests/bench, README).
gc.set_threshold(10_000, 20, 20)
