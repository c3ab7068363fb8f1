"""Prints what an IMAP client sees of a mailbox, as JSON, with imaplib over STARTTLS:
imap_state.py PORT USER PASSWORD [FLAG-SET...] where FLAG-SET is "FOLDER:SEQ:FLAGS"
(e.g. 'INBOX:1:\\Flagged \\Seen'), applied first. Output: {folder: {"uidvalidity": N,
"messages": [[uid, subject, sha256 of the whole message, [flags...]], ...]}} for every folder."""
import hashlib
import email
import imaplib
import json
import re
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4("127.0.0.1", port)
m.starttls(ssl_context=ctx)
m.login(user, password)
for change in sys.argv[4:]:
    folder, seq, flags = change.split(":", 2)
    assert m.select(folder)[0] == "OK", folder
    typ, data = m.store(seq, "+FLAGS", f"({flags})")
    assert typ == "OK", (typ, data)
state = {}
typ, folders = m.list()
for line in folders:
    name = line.decode().rsplit(' "/" ', 1)[-1].strip('"')
    typ, data = m.select(f'"{name}"', readonly=True)
    assert typ == "OK", (name, data)
    validity = int(m.response("UIDVALIDITY")[1][0])
    messages = []
    if int(data[0]) > 0:
        typ, data = m.fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta = item[0].decode()
            uid = int(re.search(r"UID (\d+)", meta).group(1))
            flags = sorted(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split())
            subject = email.message_from_bytes(item[1])["Subject"]
            messages.append([uid, subject, hashlib.sha256(item[1]).hexdigest(), flags])
    state[name] = {"uidvalidity": validity, "messages": sorted(messages)}
m.logout()
print(json.dumps(state, sort_keys=True))
