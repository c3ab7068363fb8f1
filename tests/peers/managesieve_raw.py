"""ManageSieve by hand over STARTTLS, for what the two clients never send: the
AUTHENTICATE challenge (no initial response), a cancelled one, a wrong password, NOOP
with a tag, and UNAUTHENTICATE. managesieve_raw.py PORT USER PASSWORD; ends "all done"."""
import base64
import socket
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def lines_until_status(f):
    got = []
    while True:
        line = f.readline().decode()
        if not line:
            raise SystemExit(f"closed after {got!r}")
        got.append(line.rstrip("\r\n"))
        if line.startswith(("OK", "NO", "BYE")):
            return got


def expect(what, ok):
    if not ok:
        print(f"failed: {what}")
        sys.exit(1)


sock = socket.create_connection(("127.0.0.1", port), timeout=10)
f = sock.makefile("rb")
greeting = lines_until_status(f)
expect("greeting offers STARTTLS", '"STARTTLS"' in greeting)
sock.sendall(b"STARTTLS\r\n")
expect("STARTTLS OK", lines_until_status(f)[-1].startswith("OK"))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
tls = ctx.wrap_socket(sock)
f = tls.makefile("rb")
again = lines_until_status(f)
expect("capabilities again after TLS", '"SASL" "PLAIN"' in again and '"STARTTLS"' not in again)

plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
wrong = base64.b64encode(f"\0{user}\0not-it".encode()).decode()
# Cancelled: the client answers the challenge with "*".
tls.sendall(b'AUTHENTICATE "PLAIN"\r\n')
expect("empty challenge", f.readline() == b'""\r\n')
tls.sendall(b'"*"\r\n')
expect("cancel answered NO", lines_until_status(f)[-1].startswith("NO"))
# Wrong password.
tls.sendall(f'AUTHENTICATE "PLAIN" "{wrong}"\r\n'.encode())
expect("wrong password NO", lines_until_status(f)[-1].startswith("NO"))
# The challenge answered with a literal.
tls.sendall(b'AUTHENTICATE "PLAIN"\r\n')
expect("challenge again", f.readline() == b'""\r\n')
tls.sendall(f"{{{len(plain)}+}}\r\n{plain}\r\n".encode())
expect("logged in", lines_until_status(f)[-1].startswith("OK"))
tls.sendall(b'NOOP "tag-1"\r\n')
expect("NOOP tag", lines_until_status(f)[-1].startswith('OK (TAG "tag-1")'))
tls.sendall(b"CAPABILITY\r\n")
caps = lines_until_status(f)
expect("OWNER after login", f'"OWNER" "{user}"' in caps)
tls.sendall(b"UNAUTHENTICATE\r\n")
expect("UNAUTHENTICATE OK", lines_until_status(f)[-1].startswith("OK"))
tls.sendall(b"LISTSCRIPTS\r\n")
expect("logged out again", lines_until_status(f)[-1].startswith("NO"))
tls.sendall(b"LOGOUT\r\n")
expect("LOGOUT OK", lines_until_status(f)[-1].startswith("OK"))
print("all done")
