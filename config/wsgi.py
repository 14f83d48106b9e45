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
