"""Two imaplib sessions on one mailbox: what one changes, the other hears of on its next
command (FETCH FLAGS, EXPUNGE). Also IMAP over implicit TLS (imaps) and POP3 over pop3s.
Usage: imap_two_sessions.py IMAP_PORT IMAPS_PORT POP3S_PORT USER PASSWORD"""
import imaplib
import poplib
import ssl
import sys

imap_port, imaps_port, pop3s_port, user, password = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

a = imaplib.IMAP4("127.0.0.1", imap_port)
a.starttls(ssl_context=ctx)
a.login(user, password)
b = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=ctx)
b.login(user, password)
print("ok: STARTTLS session and imaps session logged in", flush=True)
assert int(a.select("INBOX")[1][0]) == 2
assert int(b.select("INBOX")[1][0]) == 2

a.store("2", "+FLAGS", "(\\Answered)")
typ, data = b.noop()
fetches = b.untagged_responses.pop("FETCH", [])
assert any(b"\\Answered" in f for f in fetches), (fetches, b.untagged_responses)
print("ok: a flag set in one session reaches the other as FETCH FLAGS", flush=True)

a.store("1", "+FLAGS", "(\\Deleted)")
a.expunge()
typ, data = b.noop()
expunged = b.untagged_responses.pop("EXPUNGE", [])
assert expunged == [b"1"], (expunged, b.untagged_responses)
typ, data = b.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
assert b"second message" in data[0][1], data
print("ok: an expunge in one session reaches the other as EXPUNGE", flush=True)
a.logout()
b.logout()

p = poplib.POP3_SSL("127.0.0.1", pop3s_port, context=ctx)
p.user(user)
p.pass_(password)
assert p.stat()[0] == 1, p.stat()
p.quit()
print("ok: pop3s", flush=True)
print("all done", flush=True)
