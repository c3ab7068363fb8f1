"""Many logged-in clients APPEND a large message at once, over STARTTLS:
imap_append_burst.py PORT USER PASSWORD CLIENTS MEGABYTES. Prints "appended N" (how many
got OK) once every client has logged out."""
import sys
import threading

from imap_tls import connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
clients, megabytes = int(sys.argv[4]), int(sys.argv[5])
line = b"x" * 998 + b"\r\n"
message = b"From: a@sender.test\r\nSubject: big\r\n\r\n" + line * (megabytes * 1000)
ok = []


def one():
    m = connect(port, timeout=120)
    m.login(user, password)
    typ, data = m.append("INBOX", None, None, message)
    ok.append(typ)
    if typ != "OK":
        print("APPEND answered", typ, data, file=sys.stderr, flush=True)
    m.logout()


threads = [threading.Thread(target=one) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("appended", ok.count("OK"), flush=True)
