"""A webhook receiver for tests: accepts POSTs on 127.0.0.1:PORT and saves each body and
its X-Webhook-Signature header to DIR/N.json and DIR/N.sig."""
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out, exist_ok=True)


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        with open(os.path.join(out, f"{n}.sig"), "w") as f:
            f.write(self.headers.get("X-Webhook-Signature", ""))
        with open(os.path.join(out, f"{n}.json.tmp"), "wb") as f:
            f.write(body)
        os.rename(os.path.join(out, f"{n}.json.tmp"), os.path.join(out, f"{n}.json"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


print("ready", flush=True)
HTTPServer(("127.0.0.1", port), Hook).serve_forever()
