"""Checks folder counts on the IMAP server with imaplib (over STARTTLS):
imap_expect.py PORT USER PASSWORD FOLDER=N ... ; FOLDER:FLAGGED=N counts \\Flagged ones, FOLDER:SEEN=N \\Seen ones."""
import imaplib
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4("127.0.0.1", port)
m.starttls(ssl_context=ctx)
m.login(user, password)
failed = False
for spec in sys.argv[4:]:
    name, want = spec.split("=")
    folder, _, what = name.partition(":")
    typ, data = m.select(folder, readonly=True)
    if typ != "OK":
        print(f"{folder}: {typ} {data}")
        failed = True
        continue
    if what in ("FLAGGED", "SEEN"):
        typ, data = m.search(None, what)
        got = len(data[0].split())
    else:
        got = int(data[0])
    print(f"{name}: {got} (want {want})")
    failed |= got != int(want)
m.logout()
sys.exit(1 if failed else 0)
