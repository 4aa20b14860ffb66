"""A tiny Lambda Runtime API (the 2018-06-01 HTTP interface a Lambda binary polls), for the
benchmarks that run the real Lambda binaries without Docker (scripts/bench-coldstart.py,
scripts/bench-splitter.py). Python 3 stdlib only.

A binary run with AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT asks `GET .../invocation/next` for work:
the server records when each such request arrives (time.monotonic) and answers it with the next
event queued by `invoke`, or, when none comes within `hold` seconds, with a 500. Answers to an
invocation (`.../invocation/ID/response` or `.../error`) and init errors are kept, by request id.
"""

import http.server
import itertools
import json
import queue
import sys
import threading
import time

PREFIX = "/2018-06-01/runtime"


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that says nothing when a client goes away (the benchmarks kill
    the processes they start, and a killed process's open request is no error)."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeApi:
    """The server, on 127.0.0.1 and a free port, in a thread of its own."""

    def __init__(self, hold=30.0):
        self.hold = hold
        self.next_arrivals = queue.Queue()  # time.monotonic() of each GET .../invocation/next
        self.events = queue.Queue()  # (request id, JSON text) to hand out
        self.results = {}  # request id -> ("response" | "error", body)
        self.done = threading.Condition()
        self.init_errors = []
        self.ids = itertools.count(1)
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self.reply(404)
                api.next_arrivals.put(time.monotonic())
                try:
                    request_id, event = api.events.get(timeout=api.hold)
                except queue.Empty:
                    return self.reply(500, b'{"errorMessage":"no event (benchmark)"}')
                deadline_ms = int(time.time() * 1000) + 900_000
                self.reply(200, event.encode(), [
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                    ("Lambda-Runtime-Invoked-Function-Arn",
                     "arn:aws:lambda:us-east-1:000000000000:function:bench"),
                    ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
                ])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_errors.append(body.decode(errors="replace"))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response",
                                                                                   "error"):
                    with api.done:
                        api.results[parts[1]] = (parts[2], body.decode(errors="replace"))
                        api.done.notify_all()
                else:
                    return self.reply(404)
                self.reply(202, b'{"status":"OK"}')

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event, timeout):
        """Hands `event` (a JSON-serialisable object) to the next poll and waits for its answer:
        returns (kind, body), kind "response" or "error". Raises TimeoutError."""
        request_id = f"bench-{next(self.ids)}"
        self.events.put((request_id, json.dumps(event)))
        with self.done:
            if not self.done.wait_for(lambda: request_id in self.results, timeout=timeout):
                raise TimeoutError(f"no answer to invocation {request_id} in {timeout} s")
            return self.results[request_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
