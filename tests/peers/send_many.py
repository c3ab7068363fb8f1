"""Sends COUNT messages to 127.0.0.1:PORT with Python's smtplib, one per transaction,
printing "OK n" as soon as message n got its 250. Stops at the first failure."""
import smtplib
import sys

port, count, to = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
try:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo("sender.test")
    for n in range(count):
        body = f"Subject: durable-{n}\r\nMessage-ID: <durable-{n}@sender.test>\r\n\r\nmessage {n}\r\n"
        smtp.sendmail("alice@sender.test", [to], body)
        print(f"OK {n}", flush=True)
    smtp.quit()
except Exception as e:  # the server was killed: that is the point of the test
    print(f"STOPPED {type(e).__name__}", flush=True)
