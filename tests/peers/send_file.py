"""Sends the message in FILE, byte for byte, to 127.0.0.1:PORT with Python's smtplib
(which dot-stuffs and adds nothing to a message that ends in CRLF): send_file.py PORT FROM TO FILE."""
import smtplib
import sys

port, sender, to, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(path, "rb") as f:
    data = f.read()
with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
    smtp.sendmail(sender, [to], data)
print("sent", flush=True)
