"""Compares what arrived with what was sent, as a reader would with Python's email package:
  mime_same.py SENT ARRIVED
Checks that ARRIVED is 7-bit with lines of 998 at the most, that every leaf part decodes to
the same bytes (line ends read as LF) with the same type, and that Subject and the From/To display names read the
same. Prints what differs; exits 0 only when nothing does."""
import email
import sys
from email import policy

sent_bytes = open(sys.argv[1], "rb").read()
arrived_bytes = open(sys.argv[2], "rb").read()
problems = []
if any(b > 127 for b in arrived_bytes):
    problems.append("8-bit bytes arrived")
for n, line in enumerate(arrived_bytes.split(b"\r\n")):
    if len(line) > 998:
        problems.append(f"line {n + 1} is {len(line)} long")


def leaves(raw):
    message = email.message_from_bytes(raw, policy=policy.default)
    out = []
    for part in message.walk():
        if part.is_multipart():
            continue
        # Python's QP decoder ends lines in LF, its 8bit payloads keep CRLF: line ends
        # are compared as LF.
        content = (part.get_payload(decode=True) or b"").replace(b"\r\n", b"\n")
        out.append((part.get_content_type(), content))
    return message, out


sent, sent_parts = leaves(sent_bytes)
arrived, arrived_parts = leaves(arrived_bytes)
if len(sent_parts) != len(arrived_parts):
    problems.append(f"{len(sent_parts)} parts sent, {len(arrived_parts)} arrived")
for i, (s, a) in enumerate(zip(sent_parts, arrived_parts)):
    if s[0] != a[0]:
        problems.append(f"part {i}: {s[0]} sent, {a[0]} arrived")
    if s[1] != a[1]:
        problems.append(f"part {i}: content differs: {s[1][:80]!r} sent, {a[1][:80]!r} arrived")
for name in ("Subject", "From", "To"):
    s, a = str(sent.get(name, "")), str(arrived.get(name, ""))
    if s != a:
        problems.append(f"{name}: {s!r} sent, {a!r} arrived")
for p in problems:
    print(p)
print(f"{len(arrived_parts)} parts compared")
sys.exit(1 if problems else 0)
