"""QRESYNC (RFC 7162) from Python's imaplib, as a client that resynchronises does it:
imap_qresync.py PORT USER PASSWORD. Prints "all done" when every check held."""
import re
import sys

from imap_tls import connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def check(what, ok):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


m = connect(port)
m.login(user, password)
for i in range(4):
    m.append("INBOX", None, None, f"Subject: q{i}\r\n\r\nbody {i}\r\n".encode())
typ, data = m.select("INBOX")
validity = int(m.untagged_responses["UIDVALIDITY"][0])
modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(m.untagged_responses["OK"])).group(1))
check("SELECT tells UIDVALIDITY and HIGHESTMODSEQ", typ == "OK" and modseq > 0)
m.store("2", "+FLAGS", "\\Flagged")
m.store("4", "+FLAGS", "\\Deleted")
m.expunge()
m.logout()

# A client back later, with what it knew.
m = connect(port)
m.login(user, password)
typ, data = m._simple_command("ENABLE", "QRESYNC")
check("ENABLE QRESYNC", typ == "OK" and m.untagged_responses.get("ENABLED") == [b"QRESYNC"])
typ, data = m._simple_command("SELECT", "INBOX", f"(QRESYNC ({validity} {modseq} 1:4))")
check("SELECT (QRESYNC ...) is OK", typ == "OK")
vanished = m.untagged_responses.get("VANISHED", [])
check(f"VANISHED (EARLIER) names UID 4: {vanished}", vanished == [b"(EARLIER) 4"])
fetched = m.untagged_responses.get("FETCH", [])
check(f"only UID 2 changed: {fetched}", len(fetched) == 1 and b"UID 2" in fetched[0] and b"\\Flagged" in fetched[0])
m.logout()
print("all done")
