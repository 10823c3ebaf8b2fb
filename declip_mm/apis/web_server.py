"""The web page's HTTP server (standard library ``http.server``): routes, and the checks of ``web_requests.py`` on
every request (Host, Origin / Sec-Fetch-Site, content type, size, timeouts, queue and connection limits) before a
request reaches :class:`~.web_app.SegmentationService`."""
from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, Tuple
from urllib.parse import urlsplit

from .web_requests import (DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUED, DEFAULT_MAX_UPLOAD_MB, DEFAULT_REQUEST_TIMEOUT,
                           DEFAULT_TIMEOUT, LOCAL_HOSTS, RequestError, _Dropped, allowed_host_names, host_name,
                           parse_json_body)

if TYPE_CHECKING:
    from .web_app import SegmentationService

class _Handler(BaseHTTPRequestHandler):
    """Routes GET / (the page), GET /api/info, GET /api/example, POST /api/segment to :class:`SegmentationService`,
    after the checks of the module doc."""
    service: SegmentationService = None
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2 ** 20)
    allowed_hosts: frozenset = frozenset(LOCAL_HOSTS)
    timeout = DEFAULT_TIMEOUT                   # socketserver: the socket's timeout, i.e. the idle limit per read/write
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    queue: threading.BoundedSemaphore = None
    max_queued: int = DEFAULT_MAX_QUEUED
    server_version = 'declip-mm-web'

    def log_message(self, fmt, *args):                  # one short line per request on stderr
        sys.stderr.write(f'[declip-mm serve] {self.address_string()} {fmt % args}\n')

    # ------------------------------------------------------------ the whole request must arrive in time
    def handle_one_request(self):
        self._deadline = threading.Timer(self.request_timeout, self._expire)
        self._deadline.daemon = True
        self._expired = False
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def _expire(self):
        """The request did not arrive within --request-timeout: stop reading (a blocked read returns end of file)."""
        self._expired = True
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _arrived(self):
        """The request is read: the time it then takes to answer is not the client's."""
        self._deadline.cancel()

    # ------------------------------------------------------------ answers
    def _send(self, status: int, body: bytes, content_type: str, headers: Sequence[Tuple[str, str]] = ()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('X-Frame-Options', 'DENY')          # no other site may frame the page (clickjacking)
        self.send_header('Referrer-Policy', 'no-referrer')
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict, headers: Sequence[Tuple[str, str]] = ()):
        self._send(status, json.dumps(payload).encode('utf-8'), 'application/json; charset=utf-8', headers)

    def _refuse(self, err: RequestError, discard: bool = False):
        """Answer ``err``; with ``discard`` an unread body is read away first (so the client gets the answer, not
        a broken pipe) and the connection is closed."""
        if discard:
            self._discard_body()
        self._json(err.status, dict(error=str(err)), [('Retry-After', '5')] if err.status == 503 else [])

    def _answer(self, work: Callable[[], dict]):
        try:
            self._json(200, work())
        except _Dropped as err:
            self.close_connection = True
            self.log_error('dropped: %s', err)
            try:
                self._json(408, dict(error=str(err)))
            except OSError:
                pass
        except RequestError as err:
            self._refuse(err)
        except Exception as err:  # noqa: BLE001  the server outlives any one request
            traceback.print_exc(file=sys.stderr)
            self._json(500, dict(error=f'the server failed on this request: {type(err).__name__}: {err}'))

    # ------------------------------------------------------------ checks
    def _check_host(self):
        host = self.headers.get('Host')
        if host is None:
            raise RequestError(403, 'the request has no Host header')
        if host_name(host) not in self.allowed_hosts:
            raise RequestError(403, f'Host {host[:100]!r} is not an address of this server (a page of another '
                                    'site resolved to it?); if it is this server\'s name, start it with '
                                    '--allowed-hosts NAME')

    def _check_origin(self):
        """A POST from another site's page is refused: its Origin (sent by browsers on every POST) must be this
        page's, i.e. equal the Host header."""
        origin = self.headers.get('Origin')
        if origin is not None:
            parts = urlsplit(origin.strip())
            if parts.scheme not in ('http', 'https') or parts.netloc.lower() != self.headers['Host'].strip().lower():
                raise RequestError(403, f'cross-origin request refused: the page at {origin[:100]} is not this '
                                        'server\'s page (POST from the page served here, or without an Origin header)')
        site = self.headers.get('Sec-Fetch-Site')
        if site is not None and site.strip().lower() not in ('same-origin', 'none'):
            raise RequestError(403, f'cross-origin request refused (Sec-Fetch-Site: {site[:40]})')

    def _check_content_type(self):
        """JSON only: a cross-origin page can send text/plain, form or multipart bodies without a CORS preflight,
        never application/json."""
        content_type = (self.headers.get('Content-Type') or '').split(';', 1)[0].strip().lower()
        if content_type != 'application/json':
            raise RequestError(415, f'POST /api/segment takes Content-Type: application/json, got '
                                    f'{content_type or "none"!r}')

    # ------------------------------------------------------------ routes
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._arrived()
        try:
            self._check_host()
        except RequestError as err:
            self._refuse(err)
            return
        path = urlsplit(self.path).path
        if path in ('/', '/index.html'):
            self._send(200, self.service.page().encode('utf-8'), 'text/html; charset=utf-8')
        elif path == '/api/info':
            self._answer(self.service.info)
        elif path == '/api/example':
            self._answer(self.service.example)
        else:
            self._json(404, dict(error=f'no page {path}; the page is at /'))

    def do_POST(self):  # noqa: N802
        try:
            self._check_host()
            self._check_origin()
            path = urlsplit(self.path).path
            if path not in ('/api/segment', '/api/attention'):
                raise RequestError(404, f'no endpoint POST {path}; POST images to /api/segment')
            self._post_path = path
            self._check_content_type()
        except RequestError as err:
            self._refuse(err, discard=True)
            return
        self._answer(self._segment)

    def _segment(self) -> dict:
        length = self.headers.get('Content-Length')
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(411, 'the request needs a Content-Length header')
        length = int(length)
        if length > self.max_upload_bytes:
            self._discard_body()
            raise RequestError(413, f'the request is {length / 2 ** 20:.1f} MB; this server takes at most '
                                    f'{self.max_upload_bytes / 2 ** 20:.1f} MB (--max-upload-mb)')
        if not self.queue.acquire(blocking=False):
            self._discard_body()
            raise RequestError(503, f'the server is busy: it holds {self.max_queued} uploads already '
                                    '(--max-queued); try again in a few seconds')
        try:
            body = self._read_body(length)
            self._arrived()
            work = self.service.attention if getattr(self, '_post_path', None) == '/api/attention' else \
                self.service.segment
            return work(parse_json_body(body))
        finally:
            self.queue.release()

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length)
        except (TimeoutError, OSError) as err:
            raise _Dropped(f'the upload stalled: no data for {self.timeout:g} s (--timeout)') from err
        if len(body) < length:
            if self._expired:
                raise _Dropped(f'the request did not arrive within {self.request_timeout:g} s (--request-timeout)')
            raise _Dropped(f'the connection ended after {len(body)} of {length} bytes')
        return body

    def _discard_body(self):
        """Read an unwanted body away (up to 16 x the upload limit, under the timeouts) so the client gets the
        answer, not a broken pipe; a larger one is left unread. The connection is closed afterwards."""
        self.close_connection = True               # an unread rest must not be taken for the next request
        length = self.headers.get('Content-Length', '')
        length = int(length) if length.strip().isdigit() else 0
        if length > 16 * self.max_upload_bytes:
            return
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 2 ** 16))
                if not chunk:
                    return
                length -= len(chunk)
        except OSError:
            return


class WebServer(ThreadingHTTPServer):
    """:class:`ThreadingHTTPServer` with at most ``max_connections`` connections at once (503 beyond) and one-line
    log entries for clients that time out or go away."""
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = DEFAULT_MAX_CONNECTIONS):
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            body = json.dumps(dict(error=f'the server has {self.max_connections} open connections '
                                         '(--max-connections); try again')).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b'HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n'
                                b'Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s'
                                % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (TimeoutError, ConnectionError)):
            sys.stderr.write(f'[declip-mm serve] {client_address[0]} dropped: {type(err).__name__}: {err}\n')
        else:
            super().handle_error(request, client_address)


def make_server(service: SegmentationService, host: str = '127.0.0.1', port: int = 0,
                max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, allowed_hosts: Iterable[str] = (),
                timeout: float = DEFAULT_TIMEOUT, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                max_connections: int = DEFAULT_MAX_CONNECTIONS, max_queued: int = DEFAULT_MAX_QUEUED) -> WebServer:
    """A threading HTTP server for ``service`` bound to (host, port); port 0 picks a free one
    (``server.server_address[1]``). Run it with ``serve_forever()``, stop it with ``shutdown()``. The limits are
    those of the module doc."""
    handler = type('Handler', (_Handler,), dict(
        service=service, max_upload_bytes=int(max_upload_mb * 2 ** 20),
        allowed_hosts=allowed_host_names(host, allowed_hosts), timeout=timeout, request_timeout=request_timeout,
        queue=threading.BoundedSemaphore(max_queued), max_queued=max_queued))
    return WebServer((host, port), handler, max_connections)
