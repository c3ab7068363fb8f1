"""Logs in at the submission port over STARTTLS and declares a size: what RCPT answers.
  submit_size.py PORT USER PASSWORD FROM TO SIZE
Prints "CODE TEXT" of the RCPT reply."""
import smtplib
import ssl
import sys

port, user, password, sender, to, size = sys.argv[1:7]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as smtp:
    smtp.starttls(context=context)
    smtp.login(user, password)
    smtp.mail(sender, [f"SIZE={size}"])
    code, text = smtp.rcpt(to)
    print(code, text.decode())
