"""SORT and THREAD from Python's imaplib (its sort() and thread() methods) on the
mailbox tests/imap_sort_thread.rs fills: imap_sort_thread.py PORT USER PASSWORD."""
import sys

from imap_tls import connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = connect(port)
m.login(user, password)
m.select("INBOX", readonly=True)
checks = [
    ("sort by date", m.sort("(DATE)", "UTF-8", "ALL"), b"6 7 3 1 2 4 5"),
    ("sort by reverse subject", m.sort("(REVERSE SUBJECT)", "UTF-8", "ALL"), b"3 5 6 7 1 2 4"),
    ("thread references", m.thread("REFERENCES", "UTF-8", "ALL"), b"((6)(7))(3 5)(1 2 4)"),
    ("uid thread orderedsubject", m.uid("THREAD", "ORDEREDSUBJECT", "UTF-8", "ALL"), b"(6 7)(3 5)(1 (2)(4))"),
]
failed = False
for what, (typ, data), want in checks:
    ok = typ == "OK" and data == [want]
    print(("ok   " if ok else "FAIL ") + f"{what}: {typ} {data} (want {want})")
    failed |= not ok
m.logout()
if failed:
    sys.exit(1)
print("all done")
