"""Verifies a message with dkimpy, an independent implementation, taking DNS TXT records
from the command line (name=value) instead of DNS.
  dkimpy_verify.py dkim MESSAGE RECORD...  every DKIM signature; prints PASS/FAIL per signature
  dkimpy_verify.py arc MESSAGE RECORD...   the ARC chain; prints its validation (pass/fail/none)
Exits 0 only when everything passes."""
import sys

import dkim

mode, path = sys.argv[1], sys.argv[2]
message = open(path, "rb").read()
records = dict(arg.split("=", 1) for arg in sys.argv[3:])


def dnsfunc(name, timeout=5):
    return records.get(name.decode().rstrip("."), "").encode()


if mode == "arc":
    cv, results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
    print(cv.decode(), comment)
    sys.exit(0 if cv == b"pass" else 1)

count = len([line for line in message.split(b"\n") if line.lower().startswith(b"dkim-signature:")])
ok = True
for i in range(count):
    d = dkim.DKIM(message)
    passed = d.verify(idx=i, dnsfunc=dnsfunc)
    print("PASS" if passed else "FAIL", d.domain.decode() if d.domain else "", d.selector.decode() if d.selector else "")
    ok = ok and passed
sys.exit(0 if ok and count > 0 else 1)
