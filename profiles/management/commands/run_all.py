"""Serve admin and API with a Celery worker and beat beside it, for local use.

One command, one terminal: Ctrl-C stops all three."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server, a Celery worker and Celery beat together (local use)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, *args: Any, **opts: Any) -> None:
        python = sys.executable
        env = dict(os.environ)
        procs = [
            subprocess.Popen(  # noqa: S603 - fixed argv of our own interpreter
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-l",
                    "info",
                    "--pool",
                    "solo",
                    "-n",
                    "local@%h",
                ],
                env=env,
            ),
            subprocess.Popen(  # noqa: S603
                [python, "-m", "celery", "-A", "config", "beat", "-l", "info"], env=env
            ),
            subprocess.Popen(  # noqa: S603
                [python, "manage.py", "runserver", opts["addr"], "--noreload"], env=env
            ),
        ]
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
