"""Alerts to an HTTP endpoint, as Falco's http_output sends them.

Each alert is one POST whose body is the alert's JSON and whose Content-Type is
application/json: what Falcosidekick's ``/`` endpoint takes (it answers 400 to an alert without
a known priority, a rule, a time or output_fields, and such an alert is counted as failed
without retries).

The caller never waits for the network: ``post`` puts the encoded alert on a bounded queue and
returns; a full queue drops the alert and counts it. One background thread sends, one alert at a
time, over a kept-alive connection; a send that fails (connection refused or reset, timeout,
HTTP 408/429/5xx) is tried again after 0.5 s, 1 s, ... up to ``attempts`` tries in all, then
counted as failed. Other HTTP errors (400, 401, 404, redirects: not followed) are not retried.

Every alert handed to ``post`` ends up counted exactly once, once ``close`` has stopped the
thread: ``sent``, ``failed`` (tried and given up, or not encodable), or ``dropped`` (the queue was
full, the sink was closed, or ``close`` ran out of time before its turn).
"""
import base64
import http.client
import math
import queue
import socket
import ssl
import threading
import time
import urllib.parse

import orjson

from preload import __version__

_STOP = object()
_RETRY_STATUS = frozenset({408, 425, 429})  # and every 5xx
# errors a kept-alive connection gives when the server closed it while it was idle: the request
# is sent again once on a new connection, without counting as a retry
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_MAX_RESPONSE = 65536  # bytes of a response body read; a longer one closes the connection


def _logger():
    from loguru import logger  # imported on first use: loguru costs tens of milliseconds
    return logger


def _worth_saying(n):
    """The first few, then at powers of two: a dead receiver cannot flood stderr."""
    return n <= 5 or n & (n - 1) == 0


class _Target:
    __slots__ = ("https", "host", "port", "path", "auth", "shown")

    def __init__(self, url):
        if not isinstance(url, str) or not url:
            raise ValueError(f"webhook URL must be a non-empty string, not {url!r}")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
            raise ValueError(f"webhook URL {url!r} contains whitespace or control characters")
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"webhook URL {url!r} is not a valid URL: {e}") from None
        scheme = parts.scheme.lower()
        if "://" not in url:
            raise ValueError(f"webhook URL {url!r} must start with http:// or https://")
        if scheme not in ("http", "https"):
            raise ValueError(f"webhook URL {url!r}: the scheme must be http:// or https://, not {scheme}://")
        host = parts.hostname
        if not host:
            raise ValueError(f"webhook URL {url!r} has no host")
        if port == 0:
            raise ValueError(f"webhook URL {url!r}: port 0 is not a port one can send to")
        self.https = scheme == "https"
        self.host = host
        self.port = port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.auth = None
        if parts.username is not None or parts.password is not None:  # user:password@host
            creds = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
            self.auth = "Basic " + base64.b64encode(creds.encode()).decode("ascii")
        # for messages: never the credentials
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        self.shown = f"{scheme}://{netloc}{self.path}"


class Webhook:
    """Posts alerts to ``url`` from a background thread; see the module's doc.

    ``Webhook(url, queue_size=1000, timeout=2.0, attempts=3, backoff=0.5, headers=None,
    ssl_context=None)``: ``timeout`` bounds each connect and each read or write of a send;
    ``attempts`` is the number of tries per alert (1 means no retries); ``backoff`` the wait
    before the first retry, doubled before each next one; ``headers`` extra request headers
    (e.g. ``{"Authorization": "Bearer ..."}``); ``ssl_context`` for https:// URLs (default:
    ``ssl.create_default_context()``, which checks the certificate against the system's CAs).
    Credentials in the URL (``https://user:pass@host/``) are sent as HTTP Basic authentication.

    Raises ValueError for an invalid URL or parameter, before any thread is started.
    A Webhook is a sink: calling it is ``post``.
    """

    def __init__(self, url, *, queue_size=1000, timeout=2.0, attempts=3, backoff=0.5,
                 headers=None, ssl_context=None):
        self._target = _Target(url)
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, not {queue_size!r}")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ValueError(f"attempts must be a positive integer, not {attempts!r}")
        if not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(backoff, (int, float)) or not 0 <= backoff < math.inf:
            raise ValueError(f"backoff must be a number of seconds >= 0, not {backoff!r}")
        for k, v in (headers or {}).items():
            if not (isinstance(k, str) and isinstance(v, str)) or any(c in k + v for c in "\r\n\0") \
                    or not k or ":" in k:
                raise ValueError(f"invalid HTTP header {k!r}: {v!r}")
        self._timeout, self._attempts, self._backoff = float(timeout), attempts, float(backoff)
        self._ssl = None
        if self._target.https:
            self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._headers = {"Content-Type": "application/json", "User-Agent": f"preload/{__version__}"}
        if self._target.auth:
            self._headers["Authorization"] = self._target.auth
        self._headers.update(headers or {})

        self._queue = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._counts = {"sent": 0, "failed": 0, "dropped": 0, "retries": 0}
        self._closing = False
        self._abort = threading.Event()  # set when close runs out of time: stop sending now
        self._conn = None
        self._unencodable = None  # the last alert that could not be encoded (reported by the thread)
        self._next_drop_report = 1
        self._thread = threading.Thread(target=self._run, name="preload-webhook", daemon=True)
        self._thread.start()

    @property
    def url(self):
        """The URL, without credentials."""
        return self._target.shown

    def __repr__(self):
        return f"Webhook({self._target.shown!r})"

    def post(self, alert):
        """Queue one alert (a dict, or its JSON as bytes) for sending. Never blocks; True when
        queued, False when dropped (queue full, or closed) or not encodable as JSON."""
        if self._closing:
            self._count("dropped")
            return False
        if isinstance(alert, (bytes, bytearray, memoryview)):
            body = bytes(alert)
        else:
            try:
                body = orjson.dumps(alert, default=str, option=orjson.OPT_NON_STR_KEYS)
            except TypeError as e:  # orjson.JSONEncodeError is one: a cycle, a too deep alert
                self._count("failed")
                self._unencodable = e
                return False
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._count("dropped")
            return False
        return True

    __call__ = post

    def stats(self):
        """{"sent", "failed", "dropped", "retries"}: alerts delivered (2xx); given up on after
        their tries; dropped unsent; retries made (second and later tries)."""
        with self._lock:
            return dict(self._counts)

    def close(self, timeout=5.0):
        """Send what is queued within ``timeout`` seconds, then stop the thread. What is still
        queued then is counted as dropped, a send under way as failed. Returns within
        ``timeout``: True when the thread has stopped (it otherwise ends on its own once a connect
        under way gives up, within the send timeout). Later posts are dropped."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            first, self._closing = not self._closing, True
        if first:
            try:
                self._queue.put_nowait(_STOP)  # wakes the thread if it waits on an empty queue
            except queue.Full:
                pass  # then it is busy, and sees _closing once the queue is empty
        slack = min(0.25, max(0.0, timeout) / 4)  # kept to stop a send under way in time
        self._thread.join(max(0.0, deadline - slack - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            self._interrupt()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # the thread

    def _count(self, key, n=1):
        with self._lock:
            self._counts[key] += n
            return self._counts[key]

    def _run(self):
        try:
            while not (self._closing and self._queue.empty()):
                body = self._queue.get()
                if body is _STOP:
                    continue
                if self._abort.is_set():
                    self._count("dropped")  # close ran out of time before its turn
                    continue
                try:
                    self._deliver(body)
                except Exception as e:  # never lose the thread: that would silently stop delivery
                    n = self._count("failed")
                    _logger().opt(exception=e).error("webhook {}: internal error (#{} failed)", self.url, n)
                self._report()
        finally:
            self._disconnect()
            while True:  # posts that raced with close
                try:
                    if self._queue.get_nowait() is not _STOP:
                        self._count("dropped")
                except queue.Empty:
                    break
            self._report()

    def _report(self):
        dropped = self.stats()["dropped"]
        if dropped >= self._next_drop_report:
            while self._next_drop_report <= dropped:
                self._next_drop_report *= 2
            _logger().warning("webhook {}: {} alert(s) dropped so far (queue full or closed)", self.url, dropped)
        if self._unencodable is not None:
            e, self._unencodable = self._unencodable, None
            _logger().warning("webhook {}: an alert could not be encoded as JSON: {}", self.url, e)

    def _deliver(self, body):
        tries, problem = 0, ""
        while tries < self._attempts and not self._abort.is_set():
            if tries:
                if self._abort.wait(self._backoff * 2 ** (tries - 1)):
                    break
                self._count("retries")
            tries += 1
            status, problem = self._send(body)
            if status is not None and 200 <= status < 300:
                self._count("sent")
                return
            if status is not None and not (status >= 500 or status in _RETRY_STATUS):
                break
        n = self._count("failed")
        if _worth_saying(n):
            _logger().warning("webhook {}: alert not delivered after {} attempt(s): {} (#{} failed)",
                              self.url, tries, problem or "closing", n)

    def _connect(self):
        t = self._target
        if t.https:
            return http.client.HTTPSConnection(t.host, t.port, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(t.host, t.port, timeout=self._timeout)

    def _send(self, body):
        """One try: (HTTP status, "") or (None, what went wrong) or (status, why it failed)."""
        for again in (False, True):
            if self._abort.is_set():
                return None, "closing"
            reused = self._conn is not None
            if not reused:
                self._conn = self._connect()
            conn = self._conn
            try:
                conn.request("POST", self._target.path, body, self._headers)
                resp = conn.getresponse()
                resp.read(_MAX_RESPONSE)
                if not resp.isclosed():  # a body longer than we read: do not reuse the connection
                    self._disconnect()
                elif resp.will_close:
                    self._disconnect()
            except _STALE as e:
                self._disconnect()
                if reused and not again:
                    continue
                return None, _describe(e)
            except (OSError, http.client.HTTPException, ValueError) as e:
                self._disconnect()
                return None, _describe(e)
            status = resp.status
            if 200 <= status < 300:
                return status, ""
            why = f"HTTP {status} {resp.reason}".rstrip()
            if 300 <= status < 400:
                why += " (redirects are not followed)"
            return status, why
        return None, "connection lost"  # not reached

    def _disconnect(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _interrupt(self):
        """From close: end a send blocked on the network (the thread then sees _abort)."""
        conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            try:  # the plain socket's shutdown, also for an SSLSocket: it only wakes the reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except (OSError, ValueError, TypeError):
                pass


def _describe(e):
    if isinstance(e, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
