"""A small web application on the preload Python base: standard library only.

    GET /                 a greeting
    GET /connect?port=N   connects to 127.0.0.1:N and says whether anything answered
    GET /run?cmd=C        runs C with sh -c and returns its output: a deliberately unsafe debugging
                          endpoint, to show what remote code execution looks like to the agent

It listens on port 8080 (PORT) and, on SIGTERM, writes /tmp/app-stopped and exits with status 0.
"""
import os
import signal
import socket
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            self.reply(200, "hello\n")
        elif url.path == "/connect":
            try:
                socket.create_connection(("127.0.0.1", int(query["port"])), timeout=2).close()
                self.reply(200, "connected\n")
            except OSError as e:
                self.reply(200, f"{e.strerror}\n")
        elif url.path == "/run":
            done = subprocess.run(["sh", "-c", query["cmd"]], capture_output=True, text=True)
            self.reply(200, f"{done.returncode}\n{done.stdout}{done.stderr}")
        else:
            self.reply(404, "not found\n")

    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # one line per request on stdout, as web servers do
        print(f"{self.address_string()} {fmt % args}", flush=True)


def stop(signum, frame):
    raise SystemExit(0)


def main():
    signal.signal(signal.SIGTERM, stop)
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        with open("/tmp/app-stopped", "w") as f:
            f.write("stopped\n")


if __name__ == "__main__":
    main()
