"""An HTTP proxy in front of an S3 server that injects failures, for the storage tests.

    python fault_proxy.py UPSTREAM_PORT      (prints the port it listens on, then serves)

Requests are forwarded verbatim (method, path, query, headers including Host, body), so signatures still hold.
Faults are set with `POST /__faults` and a JSON list of rules, each
    {"match": "PUT partNumber=2", "kind": "status" | "drop-request" | "drop-response", "status": 503, "times": 1,
     "skip": 0, "code": "NoSuchUpload"}
where every word of `match` must appear in "METHOD PATH?QUERY"; the first `skip` matching requests pass, the
next `times` fail. "status" answers with that status and an S3
error body (its code `code`, default by status) instead of forwarding; "drop-request" reads half of the request body and closes the connection
without an answer; "drop-response" forwards, then sends the headers and half of the body and closes.
`GET /__log` lists the requests seen as "METHOD PATH?QUERY STATUS" (the status is "dropped" for a drop).
"""

import http.client
import json
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = ("127.0.0.1", int(sys.argv[1]))
lock = threading.Lock()
rules = []
log = []


def take_rule(line):
    with lock:
        for rule in rules:
            if rule.get("times", 1) > 0 and all(word in line for word in rule["match"].split()):
                if rule.get("skip", 0) > 0:
                    rule["skip"] -= 1
                    return None
                rule["times"] = rule.get("times", 1) - 1
                return rule
    return None


def note(line, status):
    with lock:
        log.append(f"{line} {status}")


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reset(self):
        # An abrupt close (RST), as a broken network gives.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def control(self):
        global rules
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else b""
        if self.command == "POST":
            with lock:
                rules = json.loads(body)
            answer = b"{}"
        elif self.command == "DELETE":
            with lock:
                rules, log[:] = [], []
            answer = b"{}"
        else:
            with lock:
                answer = json.dumps(log).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def handle_any(self):
        if self.path.startswith("/__"):
            return self.control()
        line = f"{self.command} {self.path}"
        length = int(self.headers.get("Content-Length", 0))
        rule = take_rule(line)
        if rule and rule["kind"] == "drop-request":
            self.rfile.read(length // 2)
            note(line, "dropped")
            return self.reset()
        body = self.rfile.read(length) if length else None
        if rule and rule["kind"] == "status":
            status = rule.get("status", 503)
            code = rule.get("code") or {503: "SlowDown", 500: "InternalError", 429: "SlowDown"}.get(status, "InternalError")
            answer = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            note(line, status)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        upstream = http.client.HTTPConnection(*UPSTREAM, timeout=60)
        headers = {name: value for name, value in self.headers.items()}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(name, value)
        # A HEAD answer has no body but says how long the object is.
        length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if rule and rule["kind"] == "drop-response" and self.command != "HEAD":
            note(line, "dropped")
            try:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
            except OSError:
                pass
            return self.reset()
        if self.command != "HEAD":
            self.wfile.write(data)
        note(line, response.status)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
