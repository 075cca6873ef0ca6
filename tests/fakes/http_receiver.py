"""A real HTTP server on 127.0.0.1 that keeps what it is sent: the notification receiver."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """`Receiver()` listens at once on a free port; `.url` is its base; `.bodies` what arrived
    (JSON decoded); `status` what it answers; `delay` seconds it waits before answering."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.status = 200
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if receiver.delay:
                    time.sleep(receiver.delay)
                try:
                    receiver.bodies.append(json.loads(raw))
                except ValueError:
                    receiver.bodies.append({"raw": raw.decode(errors="replace")})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def apprise_url(self, path: str = "notify") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
