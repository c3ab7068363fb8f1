"""Sends a message with Python's smtplib and prints what the server said:
send_requiretls.py PORT FROM TO SUBJECT MODE. MODE "requiretls" sends MAIL FROM with
REQUIRETLS after STARTTLS (certificate not checked), "plain" tries REQUIRETLS without
TLS, "tls-required-no" sends over STARTTLS with a "TLS-Required: No" header field.
Prints "ehlo-before: ...", "ehlo-after: ..." (whether REQUIRETLS was offered) and the
outcome: "sent" or "refused CODE TEXT"."""
import smtplib
import ssl
import sys

port, sender, to, subject, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
header = "TLS-Required: No\r\n" if mode == "tls-required-no" else ""
message = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{header}\r\nHello.\r\n"
options = [] if mode == "tls-required-no" else ["REQUIRETLS"]
with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
    smtp.ehlo("client.test")
    print("ehlo-before:", "REQUIRETLS" if smtp.has_extn("requiretls") else "-", flush=True)
    if mode != "plain":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        print("ehlo-after:", "REQUIRETLS" if smtp.has_extn("requiretls") else "-", flush=True)
    try:
        smtp.sendmail(sender, [to], message.encode(), mail_options=options)
        print("sent", flush=True)
    except smtplib.SMTPSenderRefused as e:
        print("refused", e.smtp_code, e.smtp_error.decode(), flush=True)
