"""Writes SCRIPT (with \r\n escapes) to 127.0.0.1:PORT in one go and prints every reply
until the server closes: smtp_raw.py PORT SCRIPT."""
import socket
import sys

port, script = int(sys.argv[1]), sys.argv[2].encode().decode("unicode_escape")
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.recv(4096)
    s.sendall(script.encode())
    out = b""
    while True:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
print(out.decode(errors="replace"))
