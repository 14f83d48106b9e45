"""Fixtures for the alert tests: a real SMTP server (aiosmtpd), a webhook receiver
(http.server in a thread), real Celery worker processes on a Redis database of
their own, and helpers that read what those received."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from aiosmtpd.controller import Controller

from profiles.models import Membership
from tests.factories import MembershipFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM_KEY = "spendplane-tests-alerts:claimed-by"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- SMTP ----------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part in {self.message['Subject']!r}"
        return body.get_content()

    @property
    def text(self) -> str:
        return self.part("plain")

    @property
    def html(self) -> str:
        return self.part("html")

    def content_types(self) -> list[str]:
        return [p.get_content_type() for p in self.message.walk()]


class RecordingSMTPHandler:
    """Accepts every message; with ``hold_next`` set, the next message's DATA is
    held unanswered (as a slow server would) until the client goes away, and is
    then recorded as aborted, not accepted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[Received] = []
        self.aborted: list[Received] = []
        self.hold_next = False
        self.holding = threading.Event()

    def reset(self) -> None:
        with self.lock:
            self.accepted.clear()
            self.aborted.clear()
        self.hold_next = False
        self.holding.clear()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook
        received = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            message=email.message_from_bytes(
                envelope.original_content, policy=email.policy.default
            ),
        )
        if self.hold_next:
            self.hold_next = False
            self.holding.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:  # the client's connection was lost
                with self.lock:
                    self.aborted.append(received)
                raise
            return "451 4.3.0 Held too long, try again later"
        with self.lock:
            self.accepted.append(received)
        return "250 Message accepted for delivery"


@dataclass
class SMTPServer:
    handler: RecordingSMTPHandler
    port: int

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.accepted)

    @property
    def aborted(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.aborted)

    def reset(self) -> None:
        self.handler.reset()


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SMTPServer]:
    handler = RecordingSMTPHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SMTPServer(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp(smtp_server: SMTPServer) -> SMTPServer:
    smtp_server.reset()
    return smtp_server


@pytest.fixture
def smtp_email_settings(settings, smtp: SMTPServer) -> SMTPServer:
    """This process sends mail through the test SMTP server (not locmem)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    return smtp


# -- webhooks --------------------------------------------------------------------------


@dataclass
class Post:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    answered: int


class WebhookReceiver:
    """Records every POST; answers ``status`` (set it to 500 to fail them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._posts: list[Post] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                with receiver.lock:
                    receiver._posts.append(
                        Post(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/spend"

    @property
    def posts(self) -> list[Post]:
        with self.lock:
            return list(self._posts)

    @property
    def accepted(self) -> list[Post]:
        return [p for p in self.posts if 200 <= p.answered < 300]

    def reset(self) -> None:
        with self.lock:
            self._posts.clear()
        self.status = 200


@pytest.fixture(scope="module")
def webhook_server() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def webhook(webhook_server: WebhookReceiver) -> WebhookReceiver:
    webhook_server.reset()
    return webhook_server


def hmac_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What a receiver computes: HMAC-SHA256(secret, "<timestamp>.<raw body>")."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def signature_verifies(secret: str, post: Post, body: bytes | None = None) -> bool:
    expected = hmac_signature(
        secret, post.headers["x-spend-timestamp"], post.body if body is None else body
    )
    return hmac.compare_digest(expected, post.headers.get("x-spend-signature", ""))


# -- people ----------------------------------------------------------------------------


@pytest.fixture
def dana(tenant_a):
    """An admin (not owner) of tenant A: receives alerts like the owner."""
    user = UserFactory(username="dana@example.com")
    MembershipFactory(user=user, organization=tenant_a.org, role=Membership.Role.ADMIN)
    return user


# -- Redis and Celery workers --------------------------------------------------------------


@dataclass
class Broker:
    db: int
    client: redis.Redis

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.db}"


@pytest.fixture(scope="session")
def worker_broker() -> Iterator[Broker]:
    """A Redis database of our own: the first empty one we can claim, so a
    concurrent run (or the default test broker, db 15) is never flushed by us."""
    for db in range(1, 15):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=3600):
            break
    else:
        pytest.fail("no free Redis database (1-14) to run the worker tests on")
    client.flushdb()
    client.set(CLAIM_KEY, os.getpid(), ex=3600)
    try:
        yield Broker(db, client)
    finally:
        client.flushdb()
        client.close()


def worker_database_url() -> str:
    """The URL of the database this pytest process is using (pytest-django has
    already switched the connection to the test database)."""
    from django.db import connection

    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


@dataclass
class Worker:
    """A real ``celery -A config worker`` process consuming one queue."""

    proc: subprocess.Popen[str]
    queue: str
    name: str
    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def find(self, text: str) -> str | None:
        with self.lock:
            return next((line for line in self.lines if text in line), None)

    def wait_ready(self, timeout: float = 45) -> None:
        ok = wait_until(lambda: self.find(" ready.") or self.proc.poll() is not None, timeout)
        if not ok or self.proc.poll() is not None:
            raise AssertionError(f"worker did not become ready:\n{self.output}")

    def wait_for_task(self, task_id: str, timeout: float = 30) -> str:
        """The worker's log line saying task ``task_id`` finished."""
        wait_until(
            lambda: self.find(f"[{task_id}] succeeded") or self.find(f"[{task_id}] raised"),
            timeout,
        )
        line = self.find(f"[{task_id}] succeeded") or self.find(f"[{task_id}] raised")
        assert line is not None, f"task {task_id} did not finish in {timeout}s:\n{self.output}"
        return line

    def task_result(self, task_id: str, timeout: float = 30) -> str:
        line = self.wait_for_task(task_id, timeout)
        assert "succeeded" in line, line
        return line.rsplit(": ", 1)[1].strip()

    def kill(self) -> None:
        """SIGKILL: the worker dies on the spot, whatever it was doing."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_worker(
    *,
    broker: Broker,
    email_url: str,
    settings_module: str = "tests.alerts.worker_settings",
) -> Worker:
    queue = f"alerts-test-{uuid.uuid4().hex[:12]}"
    name = f"{queue}@%h"
    env = dict(os.environ)
    env.pop("TEST_DATABASE_NAME", None)
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=worker_database_url(),
        CELERY_BROKER_URL=broker.url,
        EMAIL_URL=email_url,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "-l",
            "info",
            "-Q",
            queue,
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    worker = Worker(proc=proc, queue=queue, name=name)
    threading.Thread(target=worker._read, daemon=True).start()
    try:
        worker.wait_ready()
    except BaseException:
        worker.stop()
        raise
    return worker


def _reset_publishing(app) -> None:
    # The connection pool and the router are built lazily from the broker URL and
    # the default queue, and cached: drop them so the next publish rebuilds them.
    # (The pool itself is kombu's, shared per URL: leave it open.)
    app._pool = None
    app.__dict__.pop("amqp", None)


@contextlib.contextmanager
def celery_publishing_to(broker: Broker, queue: str) -> Iterator[object]:
    """Make this process's Celery app (what ``.delay()`` and the ingest hook use)
    publish to ``broker``/``queue``; restored afterwards."""
    from config.celery import app

    saved = {
        "broker_url": app.conf.broker_url,
        "task_default_queue": app.conf.task_default_queue,
    }
    _reset_publishing(app)
    app.conf.update(broker_url=broker.url, task_default_queue=queue)
    try:
        yield app
    finally:
        _reset_publishing(app)
        app.conf.update(saved)


def raise_unpriced(org, key: str):
    """An unpriced-usage alert for ``org`` (deduplicated by ``key``), with its deliveries."""
    from quotas.alerts import AlertSpec, alert_raise
    from quotas.models import Alert

    spec = AlertSpec(kind=Alert.Kind.UNPRICED_USAGE, dedup_key=f"unpriced:{key}",
                     title="Usage without a price", message="openai/gpt-9")  # fmt: skip
    return alert_raise(org=org, spec=spec)
