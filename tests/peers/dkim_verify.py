"""Verifies the DKIM signatures of a message with dkimpy, taking the DNS TXT records from
the command line (name=value) instead of DNS. Prints PASS or FAIL per signature."""
import sys

import dkim

message = open(sys.argv[1], "rb").read()
records = dict(arg.split("=", 1) for arg in sys.argv[2:])


def dnsfunc(name, timeout=5):
    return records.get(name.decode().rstrip("."), "").encode()


count = len([line for line in message.split(b"\n") if line.lower().startswith(b"dkim-signature:")])
ok = True
for i in range(count):
    d = dkim.DKIM(message)
    passed = d.verify(idx=i, dnsfunc=dnsfunc)
    print("PASS" if passed else "FAIL", d.domain.decode() if d.domain else "", d.selector.decode() if d.selector else "")
    ok = ok and passed
sys.exit(0 if ok and count > 0 else 1)
