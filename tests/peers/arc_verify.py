"""Verifies a message's ARC chain with dkimpy, DNS TXT records given as name=value
arguments. Prints the chain validation result (pass/fail/none) and exits 0 on pass."""
import sys

import dkim

message = open(sys.argv[1], "rb").read()
records = dict(arg.split("=", 1) for arg in sys.argv[2:])


def dnsfunc(name, timeout=5):
    return records.get(name.decode().rstrip("."), "").encode()


cv, results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
print(cv.decode(), comment)
sys.exit(0 if cv == b"pass" else 1)
