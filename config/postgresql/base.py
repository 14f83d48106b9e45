"""Django's PostgreSQL backend (psycopg 3), with a cheaper health check.

With CONN_HEALTH_CHECKS, Django checks a reused connection at the start of
every request with ``SELECT 1``: a round trip per request, a tenth of a
pre-flight check's work. A connection the server has closed (a restart, an
idle timeout, a terminated backend) has something to read on its socket: the
server's goodbye, or end of file. So the socket is polled without waiting,
and only a connection with something unread gets the ``SELECT 1``; an idle,
healthy one is used as it is. A connection cut without a word from the server
(a network partition) fails its first query instead, as it would have failed
``SELECT 1``; Django then drops it at the end of that request.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus

# Where SELECT 1 could not succeed: a failed transaction block, a broken link.
_UNUSABLE = {TransactionStatus.INERROR, TransactionStatus.UNKNOWN}


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        if self.connection.info.transaction_status in _UNUSABLE:
            return False
        try:
            unread, _, _ = select.select([self.connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        if not unread:
            return True
        return super().is_usable()
