"""A fault proxy between boto3 and the local S3 server, on a real TCP port.

Requests are forwarded unchanged until the proxy is armed. Armed, it lets matching
requests through until the `nth`, and from that one on (for `times` requests, or until
`disarm()`) it injects one kind of fault into every request:

- `refuse`: the connection is reset and the listening socket closed, so retries and new
  connections get "connection refused" (the store went away);
- `error500`: an S3-style `InternalError` answer, nothing forwarded (the store is sick);
- `slow`: the request is forwarded (the store does the work) but the answer is held for
  `hold_seconds`, longer than the client's read timeout (the store is overloaded).

    proxy.arm("error500", operation="UploadPart", nth=3)  # the 3rd part and all after it
    proxy.arm("refuse", operation="PutObject", key_suffix="/manifest.json")
    proxy.arm("error500", times=1)  # one transient 500 on the next request
"""

import http.client
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KINDS = ("refuse", "error500", "slow")
# Not forwarded: they describe one hop, not the request (bodies are re-framed by length).
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "te", "upgrade"}
COPY_CHUNK = 256 * 1024


# (method, query parameter present) → S3 call; then a method on /bucket/key is an object call.
QUERY_OPERATIONS = [
    ("POST", "uploads", "CreateMultipartUpload"),
    ("POST", "uploadId", "CompleteMultipartUpload"),
    ("POST", "delete", "DeleteObjects"),
    ("PUT", "partNumber", "UploadPart"),
    ("DELETE", "uploadId", "AbortMultipartUpload"),
    ("GET", "uploads", "ListMultipartUploads"),
    ("GET", "list-type", "ListObjectsV2"),
]
OBJECT_OPERATIONS = {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}


def s3_operation(method: str, path: str) -> str:
    """The S3 call a path-style request makes (those of a snapshot's traffic, at least)."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    for verb, parameter, operation in QUERY_OPERATIONS:
        if method == verb and parameter in query:
            return operation
    if "/" in parts.path.strip("/"):
        return OBJECT_OPERATIONS.get(method, method)
    return f"{method} bucket"


@dataclass
class Fault:
    kind: str
    operation: str | None
    nth: int
    key_suffix: str | None
    times: int | None
    matched: int = 0
    injected: int = 0

    def matches(self, operation: str, path: str) -> bool:
        if self.operation is not None and operation != self.operation:
            return False
        return self.key_suffix is None or urlsplit(path).path.endswith(self.key_suffix)


class S3FaultProxy:
    def __init__(self, upstream_url: str, *, hold_seconds: float = 30.0):
        upstream = urlsplit(upstream_url)
        self.upstream = (upstream.hostname, upstream.port)
        self.hold_seconds = hold_seconds
        self.port: int | None = None
        self.requests: list[tuple[str, str, str]] = []  # (operation, path, what happened)
        self._fault: Fault | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._disarmed = threading.Event()
        self._server: _Server | None = None
        self._listener_lock = threading.Lock()  # one bind or close of the port at a time
        self._connections: set[socket.socket] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3FaultProxy":
        with self._listener_lock:
            if self._server is None:
                # The same port again after a `refuse`: the client's endpoint URL stays valid.
                self._server = _Server(("127.0.0.1", self.port or 0), _Handler)
                self._server.proxy = self
                self.port = self._server.server_address[1]
                threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            _reset(connection)

    def arm(self, kind: str, *, operation=None, nth: int = 1, key_suffix=None, times: int | None = None) -> None:
        """Fault from the `nth` request of `operation` (any) whose key ends with `key_suffix`
        (any) on. `times` limits a 500 or a slow answer; a refused port stays closed until
        `disarm()`."""
        if kind not in KINDS:
            raise ValueError(f"fault kind {kind!r} is not one of {', '.join(KINDS)}")
        with self._lock:
            self._fault = Fault(kind, operation, nth, key_suffix, times)
            self._disarmed.clear()

    def disarm(self) -> None:
        """The fault is over: held answers go out, and a closed port listens again."""
        with self._lock:
            self._fault = None
            self._disarmed.set()
        if not self._stopping.is_set():
            self.start()

    @property
    def injected(self) -> int:
        with self._lock:
            return self._fault.injected if self._fault else 0

    def operations(self) -> list[str]:
        with self._lock:
            return [operation for operation, _path, _outcome in self.requests]

    def _decide(self, operation: str, path: str) -> str | None:
        """Which fault this request gets, if any; counts it either way."""
        with self._lock:
            fault = self._fault
            if fault is not None and fault.injected == 0 and fault.matches(operation, path):
                fault.matched += 1
            firing = fault is not None and fault.matched >= fault.nth
            if firing and (fault.times is None or fault.injected < fault.times):
                fault.injected += 1
                self.requests.append((operation, path, fault.kind))
                return fault.kind
            self.requests.append((operation, path, "forwarded"))
            return None

    def _close_listener(self) -> None:
        with self._listener_lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None

    def _hold(self) -> None:
        """Hold an answer until the hold is over, the fault is disarmed or the proxy stops."""
        deadline = time.monotonic() + self.hold_seconds
        while time.monotonic() < deadline and not (self._disarmed.is_set() or self._stopping.is_set()):
            self._stopping.wait(0.05)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # held answers must not keep `stop()` waiting
    proxy: S3FaultProxy

    def handle_error(self, request, client_address):
        # A reset or abandoned connection is the point of this server; anything else is a bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _reset(connection: socket.socket) -> None:
    """Abort a connection: linger 0 makes the close an RST instead of a clean FIN."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered as boto3 expects

    def setup(self):
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._connections.add(self.connection)

    def finish(self):
        with self.server.proxy._lock:
            self.server.proxy._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # the test output stays readable; `proxy.requests` has the log

    def do_request(self):
        proxy = self.server.proxy
        body = self._read_body()
        fault = proxy._decide(s3_operation(self.command, self.path), self.path)
        if fault == "refuse":
            # The store goes away: this connection is reset, new ones are refused.
            proxy._close_listener()
            _reset(self.connection)
            self.close_connection = True
            return
        if fault == "error500":
            self._answer_500()
            return
        try:
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
        except OSError:
            _reset(self.connection)  # the store behind the proxy is down
            self.close_connection = True
            return
        if fault == "slow":
            proxy._hold()
        try:
            self._relay(response)
        except OSError:
            self.close_connection = True  # the client gave up waiting
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_request

    def _read_body(self) -> bytes:
        # The panel's client sends plain bodies (no aws-chunked: checksums only when required).
        if self.headers.get("Transfer-Encoding"):
            raise ValueError(f"{self.command} {self.path}: chunked bodies are not supported by this proxy")
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer_500(self) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            "<Message>We encountered an internal error. Please try again.</Message>"
            f"<Resource>{urlsplit(self.path).path}</Resource><RequestId>s3-fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        body = None if length is not None or self.command == "HEAD" else response.read()
        for name, value in response.getheaders():
            if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)) if body is not None else length or "0")
        self.end_headers()
        if self.command == "HEAD":
            return
        if body is not None:
            self.wfile.write(body)
            return
        while chunk := response.read(COPY_CHUNK):
            self.wfile.write(chunk)
