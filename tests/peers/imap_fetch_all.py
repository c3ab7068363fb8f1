"""Reads a whole folder the way a syncing client does, with imaplib over STARTTLS:
imap_fetch_all.py PORT USER PASSWORD [APPEND_FILE]. With APPEND_FILE, appends it to INBOX
first. Then FETCHes BODYSTRUCTURE, ENVELOPE and BODY.PEEK[] of every message, searches the
text of all of them, and prints one line per message: "uid SIZE ok" or what failed."""
import sys

from imap_tls import connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = connect(port)
m.login(user, password)
if len(sys.argv) > 4:
    with open(sys.argv[4], "rb") as f:
        typ, data = m.append("INBOX", None, None, f.read())
    print("append", typ, data[0].decode(errors="replace") if data and data[0] else "", flush=True)
typ, data = m.select("INBOX")
print("select", typ, data[0].decode(), flush=True)
failed = False
for what in ["(UID BODYSTRUCTURE ENVELOPE)", "(UID BODY.PEEK[])", "(UID BODY.PEEK[1.1.1] BODY.PEEK[TEXT])"]:
    typ, data = m.fetch("1:*", what)
    if typ != "OK":
        print("fetch", what, typ, data, flush=True)
        failed = True
    else:
        print("fetch", what, "OK", len(data), flush=True)
typ, data = m.search(None, "TEXT", "hello")
print("search", typ, data[0].decode() if typ == "OK" else data, flush=True)
failed |= typ != "OK"
m.logout()
sys.exit(1 if failed else 0)
