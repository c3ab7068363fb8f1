"""Opens implicit-TLS connections to 127.0.0.1:PORT (IMAPS) with the given SNI and prints
the SHA-256 of the certificate each was served, so a test can see which certificate a
connection got. With --once: one connection, print, exit. Otherwise: one connection,
print "first FP", wait for a line on stdin, then NOOP on the first connection (print
"old LINE") and open a second one (print "second FP")."""
import hashlib
import socket
import ssl
import sys

port, name = int(sys.argv[1]), sys.argv[2]
once = "--once" in sys.argv
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def connect():
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=name)
    reader = tls.makefile("rb")
    reader.readline()  # the greeting
    return tls, reader, hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


first, reader, fp = connect()
print(("" if once else "first ") + fp, flush=True)
if once:
    sys.exit(0)
sys.stdin.readline()
first.sendall(b"a NOOP\r\n")
print("old " + reader.readline().decode().strip(), flush=True)
_, _, fp2 = connect()
print("second " + fp2, flush=True)
