#!/usr/bin/env python3
"""A pass-through proxy in front of `cargo lambda watch --only-lambda-apis` that gives each
invocation a real deadline.

cargo lambda's runtime API answers every /invocation/next with `Lambda-Runtime-Deadline-Ms: 600000`,
an instant in 1970, where Lambda sends the epoch milliseconds at which the invocation times out.
The worker stops taking manifests before its deadline, so behind cargo lambda alone it would
return every manifest unworked ("no time left"). This proxy forwards every request and rewrites
that header to now + the function's timeout, as Lambda computes it.

Usage: runtime_deadline_proxy.py LISTEN_PORT UPSTREAM_PORT TIMEOUT_SECONDS
"""
import http.client
import http.server
import sys
import time

listen_port, upstream_port, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        # /next is a long poll: no timeout on the upstream connection.
        upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=None)
        upstream.request(self.command, self.path, body=body, headers=headers)
        resp = upstream.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "content-length"):
                continue
            if k.lower() == "lambda-runtime-deadline-ms":
                v = str(int((time.time() + timeout_s) * 1000))
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", listen_port), Proxy).serve_forever()
