"""A mail user's session with Python's imaplib against the IMAP listener, asserting what
the user would see. Usage: imap_session.py IMAP_PORT MX_PORT USER PASSWORD OTHER_USER.
The account's INBOX must hold the two messages the test sent, in order, and
sent-1.eml / sent-2.eml (what was sent) must be in the working directory.
Prints one line per step; exits non-zero on the first failed check."""
import email.utils
import imaplib
import re
import smtplib
import socket
import ssl
import sys
import time

imap_port, mx_port, user, password, other = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def step(name):
    print("ok:", name, flush=True)


def expect_fail(fn, *args):
    try:
        typ, data = fn(*args)
    except imaplib.IMAP4.error as e:
        return str(e)
    raise AssertionError(f"{fn.__name__}{args} should fail, got {typ} {data}")


# Before TLS: LOGINDISABLED, and LOGIN refused.
m = imaplib.IMAP4("127.0.0.1", imap_port)
assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities, m.capabilities
why = expect_fail(m.login, user, password)
step(f"login before STARTTLS refused ({why})")
m.starttls(ssl_context=ctx)
assert "LOGINDISABLED" not in m.capabilities, m.capabilities
why = expect_fail(m.login, user, "wrong password")
assert "AUTHENTICATIONFAILED" in why, why
m.login(user, password)
step("STARTTLS then LOGIN")

typ, caps = m.capability()
for cap in [b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"CONDSTORE", b"QUOTA", b"NAMESPACE"]:
    assert cap in caps[0].split(), caps
step("capabilities after login")

typ, listing = m.list()
names = {}
for line in listing:
    match = re.match(rb'\((.*?)\) "/" "?([^"]*)"?', line)
    names[match.group(2).decode()] = match.group(1).decode()
for folder, role in [("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"),
                     ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")]:
    assert folder in names, listing
    if role:
        assert role in names[folder], (folder, names[folder])
step("LIST shows the special-use folders")

typ, data = m.select("INBOX")
assert typ == "OK" and int(data[0]) == 2, data
uidvalidity = m.untagged_responses.get("UIDVALIDITY")
assert uidvalidity, m.untagged_responses
step("SELECT INBOX: 2 messages")

sent = [open(f"sent-{i}.eml", "rb").read() for i in (1, 2)]
typ, data = m.fetch("1:2", "(UID FLAGS RFC822.SIZE BODY.PEEK[] ENVELOPE BODYSTRUCTURE INTERNALDATE)")
bodies = [part[1] for part in data if isinstance(part, tuple)]
assert len(bodies) == 2, data
for body, original in zip(bodies, sent):
    # What the MX stored: the final delivery's Return-Path (RFC 5321 §4.4), its trace
    # headers, then the message exactly as sent.
    assert body.endswith(original), (body[-200:], original[-200:])
    assert re.match(rb"Return-Path: <[^>]*>\r\nReceived: from ", body), body[:100]
typ, data = m.fetch("1", "(FLAGS ENVELOPE BODYSTRUCTURE)")
meta = data[0].decode()
assert "ENVELOPE" in meta and "BODYSTRUCTURE" in meta and "\\Seen" not in meta, meta
assert '"first message"' in meta and '"<one@sender.test>"' in meta, meta
typ, data = m.fetch("2", "(BODYSTRUCTURE)")
assert b'("TEXT" "PLAIN"' in data[0] and b'"ALTERNATIVE"' in data[0], data
step("FETCH bodies are byte-for-byte what was delivered; ENVELOPE, BODYSTRUCTURE")

typ, data = m.fetch("2", "(BODY[1] BODY.PEEK[HEADER.FIELDS (Subject)] BODY[TEXT]<0.5>)")
text = b"".join(p[1] for p in data if isinstance(p, tuple))
assert b"Subject: second message" in text, data
typ, data = m.fetch("2", "(FLAGS)")
assert b"\\Seen" in data[0], data
step("FETCH sections and partials; BODY[] marks \\Seen")

typ, data = m.search(None, "UNSEEN")
assert data[0].split() == [b"1"], data
typ, data = m.search(None, "SUBJECT", '"second"')
assert data[0].split() == [b"2"], data
typ, data = m.search(None, "TEXT", "needle")
assert data[0].split() == [b"1"], data
typ, data = m.search("UTF-8", "OR", "FROM", "alice", "NOT", "ALL")
assert data[0].split() == [b"1", b"2"], data
typ, data = m.uid("SEARCH", None, "ALL")
uids = data[0].split()
assert len(uids) == 2, data
step("SEARCH flags, header, text, OR/NOT; UID SEARCH")

typ, data = m.status("INBOX", "(HIGHESTMODSEQ)")
before = int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1))
typ, data = m.store("1", "+FLAGS", "(\\Flagged $Work)")
assert b"\\Flagged" in data[0] and b"$Work" in data[0], data
typ, data = m.uid("STORE", uids[0].decode(), "-FLAGS.SILENT", "($Work)")
typ, data = m.fetch("1", "(FLAGS)")
assert b"$Work" not in data[0] and b"\\Flagged" in data[0], data
# CONDSTORE: only the message changed since `before` comes back, with its MODSEQ.
typ, data = m.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE %d)" % before)
assert len(data) == 1 and b"MODSEQ" in data[0] and b"\\Flagged" in data[0], data
step("STORE +FLAGS / UID STORE -FLAGS.SILENT; FETCH CHANGEDSINCE")

typ, data = m.copy("1", "Archive")
assert typ == "OK" and b"COPYUID" in data[0], data
typ, data = m.uid("MOVE", uids[1].decode(), "Trash")
assert typ == "OK", data
# MOVE tells the client the moved message is gone from the selected folder (RFC 6851).
assert m.untagged_responses.get("EXPUNGE"), m.untagged_responses
typ, data = m.status("Trash", "(MESSAGES UIDNEXT UNSEEN)")
assert b"MESSAGES 1" in data[0], data
typ, data = m.status("INBOX", "(MESSAGES)")
assert b"MESSAGES 1" in data[0], data
step("COPY with COPYUID; UID MOVE; STATUS")

date = imaplib.Time2Internaldate(time.time())
draft = b"Subject: a draft\r\nFrom: " + user.encode() + b"\r\n\r\nunfinished\r\n"
typ, data = m.append("Drafts", "(\\Draft)", date, draft)
assert typ == "OK" and b"APPENDUID" in data[0], data
m.select("Drafts")
typ, data = m.fetch("1", "(FLAGS BODY.PEEK[])")
assert data[0][1] == draft and b"\\Draft" in data[0][0], data
step("APPEND with flags, APPENDUID, read back")

assert m.create("Work")[0] == "OK"
assert m.create("Work/2025")[0] == "OK"
unicode_name = "Entw&APw-rfe"  # "Entwürfe" in modified UTF-7
assert m.create(unicode_name)[0] == "OK"
assert m.rename("Work", "Jobs")[0] == "OK"
typ, listing = m.list('""', "*")
flat = b" ".join(listing)
assert b"Jobs/2025" in flat and unicode_name.encode() in flat and b'"Work"' not in flat, listing
assert m.delete("Jobs/2025")[0] == "OK"
typ, data = m.select("Nope")
assert typ == "NO", data
step("CREATE / RENAME / DELETE, modified UTF-7 names, NO for a missing folder")

m.select("INBOX")
m.store("1", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
assert data == [b"1"], data
typ, data = m.select("INBOX")
assert int(data[0]) == 0, data
step("EXPUNGE")

typ, data = m.getquotaroot("INBOX")
assert typ == "OK", data
step("GETQUOTAROOT")

# IDLE: a message delivered by the MX shows up at once.
tag = m._new_tag().decode()
m.send(f"{tag} IDLE\r\n".encode())
line = m.readline()
assert line.startswith(b"+"), line
started = time.time()
msg = email.message.EmailMessage()
msg["From"] = "carol@sender.test"
msg["To"] = user
msg["Subject"] = "while idling"
msg["Date"] = email.utils.formatdate()
msg.set_content("hello idle\n")
with smtplib.SMTP("127.0.0.1", mx_port) as s:
    s.send_message(msg)
m.sock.settimeout(20)
line = m.readline()
assert re.match(rb"\* 1 EXISTS", line), line
elapsed = time.time() - started
m.send(b"DONE\r\n")
while True:
    line = m.readline()
    if line.startswith(tag.encode()):
        assert b"OK" in line, line
        break
step(f"IDLE sees a new delivery ({elapsed:.2f} s after sending)")
m.logout()

# Another account sees nothing of this one.
o = imaplib.IMAP4_SSL("127.0.0.1", imap_port + 1, ssl_context=ctx) if False else imaplib.IMAP4("127.0.0.1", imap_port)
o.starttls(ssl_context=ctx)
typ, data = o.authenticate("PLAIN", lambda _: f"\0{other}\0{password}".encode())
assert typ == "OK", data
typ, data = o.select("INBOX")
assert int(data[0]) == 0, data
typ, data = o.uid("FETCH", "1:*", "(BODY.PEEK[])")
assert data == [None], data
typ, data = o.status("Archive", "(MESSAGES)")
assert b"MESSAGES 0" in data[0], data
o.logout()
step("AUTHENTICATE PLAIN; another account sees none of it")
print("all done", flush=True)
