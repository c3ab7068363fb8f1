"""IDLEs on one node's IMAP and sends a message through another node's MX; prints how
long the IDLE took to see it: imap_idle.py IMAP_PORT MX_PORT USER PASSWORD.
Exits 1 when no EXISTS arrives within 20 s."""
import email.message
import email.utils
import imaplib
import re
import smtplib
import ssl
import sys
import time

imap_port, mx_port, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4("127.0.0.1", imap_port)
m.starttls(ssl_context=ctx)
m.login(user, password)
typ, data = m.select("INBOX")
before = int(data[0])
tag = m._new_tag().decode()
m.send(f"{tag} IDLE\r\n".encode())
line = m.readline()
assert line.startswith(b"+"), line
started = time.time()
msg = email.message.EmailMessage()
msg["From"] = "carol@sender.test"
msg["To"] = user
msg["Subject"] = "while idling elsewhere"
msg["Date"] = email.utils.formatdate()
msg.set_content("hello from the other node\n")
with smtplib.SMTP("127.0.0.1", mx_port) as s:
    s.send_message(msg)
m.sock.settimeout(20)
try:
    while True:
        line = m.readline()
        if re.match(rb"\* (\d+) EXISTS", line) and int(line.split()[1]) > before:
            break
except (TimeoutError, OSError):
    print("no EXISTS within 20 s")
    sys.exit(1)
print(f"EXISTS after {time.time() - started:.2f} s")
m.send(b"DONE\r\n")
m.logout()
