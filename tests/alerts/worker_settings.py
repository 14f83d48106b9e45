"""Settings for the Celery workers the alert tests start: the test settings, plus
two things ``config/settings/test.py`` does not take from the environment.

- ``EMAIL_URL``: test.py pins ``EMAIL_BACKEND`` to locmem after base.py has read
  ``EMAIL_URL``, so a worker started with ``config.settings.test`` never talks to
  the SMTP server it is given (see ``test_worker_under_test_settings_sends_mail_to_
  the_email_url_server``). The pipeline tests need real SMTP, so they take it here.
- ``CELERY_TASK_DEFAULT_QUEUE``: tasks the worker queues itself (evaluate ->
  send_notifications) must land on the test's own queue, not the shared default.
"""

from __future__ import annotations

import os

from config.settings.test import *  # noqa: F403
from config.settings.test import env

if os.environ.get("EMAIL_URL"):
    vars().update(env.email_url("EMAIL_URL"))
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
