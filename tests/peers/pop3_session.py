"""A POP3 user's session with Python's poplib: pop3_session.py PORT USER PASSWORD.
The INBOX must hold the two messages of sent-1.eml / sent-2.eml (in the working dir)."""
import poplib
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def step(name):
    print("ok:", name, flush=True)


p = poplib.POP3("127.0.0.1", port)
caps = p.capa()
assert "STLS" in caps and "USER" not in caps, caps
try:
    p.user(user)
    raise AssertionError("USER before STLS must fail")
except poplib.error_proto as e:
    step(f"USER before STLS refused ({e})")
p.stls(context=ctx)
caps = p.capa()
assert "USER" in caps and "SASL" in caps and "UIDL" in caps and "TOP" in caps, caps
p.user(user)
try:
    p.pass_("wrong")
    raise AssertionError("a wrong password must fail")
except poplib.error_proto as e:
    assert b"[AUTH]" in e.args[0], e
p.user(user)
p.pass_(password)
step("STLS, then USER/PASS")

count, size = p.stat()
assert count == 2, (count, size)
resp, listing, _ = p.list()
sizes = [int(line.split()[1]) for line in listing]
assert sum(sizes) == size, (listing, size)
resp, uids, _ = p.uidl()
assert len(set(u.split()[1] for u in uids)) == 2, uids
step("STAT / LIST / UIDL")

sent = [open(f"sent-{i}.eml", "rb").read() for i in (1, 2)]
for n in (1, 2):
    resp, lines, octets = p.retr(n)
    body = b"\r\n".join(lines) + b"\r\n"
    assert body.endswith(sent[n - 1]), (body[-120:], sent[n - 1][-120:])
    assert len(body) == sizes[n - 1] == octets, (len(body), sizes, octets)
resp, lines, _ = p.top(2, 0)
assert any(l.startswith(b"Subject: second message") for l in lines) and b"plain part" not in b"".join(lines), lines
step("RETR is the delivered message byte for byte; TOP")

# A second session cannot take the maildrop while this one holds it.
q = poplib.POP3("127.0.0.1", port)
q.stls(context=ctx)
q.user(user)
try:
    q.pass_(password)
    raise AssertionError("the maildrop must be locked")
except poplib.error_proto as e:
    assert b"IN-USE" in e.args[0], e
q.quit()
step("maildrop locked against a second session")

p.dele(1)
try:
    p.retr(1)
    raise AssertionError("a deleted message cannot be read")
except poplib.error_proto:
    pass
p.rset()
assert p.stat()[0] == 2
p.dele(1)
p.quit()
step("DELE / RSET / DELE, QUIT commits")

p = poplib.POP3("127.0.0.1", port)
p.stls(context=ctx)
p.user(user)
p.pass_(password)
assert p.stat()[0] == 1
resp, lines, _ = p.retr(1)
assert b"\r\n".join(lines).endswith(sent[1].rstrip(b"\r\n")), lines
p.quit()
step("after QUIT only the other message is left")
print("all done", flush=True)
