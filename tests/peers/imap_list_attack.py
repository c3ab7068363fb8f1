"""Folder-name attacks over IMAP (STARTTLS): imap_list_attack.py PORT USER PASSWORD.
Tries a 5000-level folder and a 100,000-character name (each should be refused: "deep
NO", "long NO"), makes a 30-level folder of long names, then LISTs it with a pattern that
backtracks exponentially in a naive matcher (which would never answer: the client gives
up after 60 s), and prints "list OK SECONDS"."""
import sys
import time

from imap_tls import connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = connect(port)
m.login(user, password)
typ, _ = m.create("/".join(["d"] * 5000))
print("deep", typ, flush=True)
typ, _ = m.create("x" * 100000)
print("long", typ, flush=True)
typ, data = m.create("/".join(["d" * 16] * 30))
print("ok-depth", typ, data, flush=True)
began = time.time()
typ, data = m.list('""', '"*d*d*d*d*d*d*d*d*d*d*d*d*x"')
took = time.time() - began
print("list", typ, "%.2f" % took, len(data), flush=True)
m.logout()
sys.exit(0 if typ == "OK" else 1)
