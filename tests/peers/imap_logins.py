"""Tries IMAP logins from a given loopback source address, over STARTTLS:
imap_logins.py PORT SOURCE_IP USER PASSWORD TIMES. Prints one word per try: "ok",
"no" (refused) or "throttled" (refused unchecked: the server says so)."""
import imaplib
import sys

from imap_tls import connect

port, source, user, password, times = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

m = connect(port, source=source, timeout=30)
for _ in range(times):
    try:
        m.login(user, password)
        print("ok", flush=True)
        m.logout()
        break
    except imaplib.IMAP4.error as e:
        text = str(e).lower()
        print("throttled" if "too many" in text or "later" in text else "no", flush=True)
