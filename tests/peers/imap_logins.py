"""Tries IMAP logins from a given loopback source address, over STARTTLS:
imap_logins.py PORT SOURCE_IP USER PASSWORD TIMES. Prints one word per try: "ok",
"no" (refused) or "throttled" (refused unchecked: the server says so)."""
import imaplib
import socket
import ssl
import sys

port, source, user, password, times = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


class FromSource(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))


ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = FromSource("127.0.0.1", port, timeout=30)
m.starttls(ssl_context=ctx)
for _ in range(times):
    try:
        m.login(user, password)
        print("ok", flush=True)
        m.logout()
        break
    except imaplib.IMAP4.error as e:
        text = str(e).lower()
        print("throttled" if "too many" in text or "later" in text else "no", flush=True)
