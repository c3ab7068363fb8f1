"""Writes a message whose MIME parts nest LEVELS deep to FILE: deep_mime.py KIND LEVELS FILE,
KIND "multipart" (multipart/mixed in multipart/mixed...) or "rfc822" (message/rfc822 in
message/rfc822...). Small (70 KB for 1000 multiparts), and fatal to a recursive parser."""
import sys

kind, levels, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = ["From: Mallory <mallory@sender.test>", "To: me@example.test", "Subject: deep " + kind,
       "Date: Tue, 1 Jul 2025 10:00:00 +0000", "Message-ID: <deep-%s-%d@sender.test>" % (kind, levels),
       "MIME-Version: 1.0"]
if kind == "multipart":
    out += ['Content-Type: multipart/mixed; boundary="b0"', ""]
    for i in range(1, levels):
        out += ["--b%d" % (i - 1), 'Content-Type: multipart/mixed; boundary="b%d"' % i, ""]
    out += ["--b%d" % (levels - 1), "Content-Type: text/plain", "", "hello from the bottom"]
    out += ["--b%d--" % i for i in reversed(range(levels))]
else:
    out += ["Content-Type: message/rfc822", ""]
    for _ in range(levels - 1):
        out += ["Subject: inner", "Content-Type: message/rfc822", ""]
    out += ["Subject: bottom", "", "hello from the bottom"]
with open(path, "wb") as f:
    f.write(("\r\n".join(out) + "\r\n").encode())
