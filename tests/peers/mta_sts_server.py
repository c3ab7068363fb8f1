"""An MTA-STS policy server for tests: HTTPS on ADDRESS:443 with CERT and KEY, answering
/.well-known/mta-sts.txt with the file POLICY as it is at each request (so a test can
change it). Each request appends a line to POLICY.fetched. A fifth argument changes the
answer: "redirect" (a 301 to /moved on the same server, which serves the policy: a sender
that follows redirects gets it, one that does not gets none) or "huge" (100 KB of policy,
no length given). A POST to /tlsrpt (an SMTP TLS report, RFC 8460 §5.4) must be
application/tlsrpt+gzip: its gunzipped body goes to POLICY.posted.json."""
import gzip
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

address, cert, key, policy = sys.argv[1:5]
behaviour = sys.argv[5] if len(sys.argv) > 5 else "normal"


class Policy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with open(policy + ".fetched", "a") as f:
            f.write(self.path + "\n")
        if behaviour == "redirect" and self.path != "/moved":
            self.send_response(301)
            self.send_header("Location", "/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path not in ("/.well-known/mta-sts.txt", "/moved"):
            self.send_error(404)
            return
        if behaviour == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            head = open(policy, "rb").read()
            self.wfile.write(head + b"x: " + b"a" * 100_000 + b"\n")
            return
        body = open(policy, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/tlsrpt" or self.headers.get("Content-Type") != "application/tlsrpt+gzip":
            self.send_error(415)
            return
        with open(policy + ".posted.json", "wb") as f:
            f.write(gzip.decompress(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((address, 443), Policy)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
