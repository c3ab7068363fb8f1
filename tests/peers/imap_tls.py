"""What the IMAP peers share: a client on 127.0.0.1:PORT, upgraded with STARTTLS (the
server's certificate is self-signed), optionally from a given loopback source address."""
import imaplib
import socket
import ssl


def connect(port, source=None, timeout=60):
    class FromSource(imaplib.IMAP4):
        def _create_socket(self, timeout):
            bind = (source, 0) if source else None
            return socket.create_connection((self.host, self.port), timeout, source_address=bind)

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = FromSource("127.0.0.1", port, timeout=timeout)
    client.starttls(ssl_context=ctx)
    return client


class Checks:
    """Prints each check as "ok" or "FAIL" with what was seen, and remembers a failure."""

    def __init__(self):
        self.failed = False

    def __call__(self, what, ok, got):
        print(("ok   " if ok else "FAIL ") + f"{what}: {got}")
        self.failed |= not ok
