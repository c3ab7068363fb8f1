"""A user filing mail with imaplib (over STARTTLS), as a mail client's "Junk" and
"Not junk" buttons do: imap_move.py PORT USER PASSWORD FROM TO moves every message of
FROM into TO with UID MOVE (RFC 6851). Prints the COPYUID answer."""
import imaplib
import ssl
import sys

port, user, password, source, dest = (
    int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4("127.0.0.1", port)
m.starttls(ssl_context=ctx)
m.login(user, password)
typ, data = m.select(source)
assert typ == "OK", (typ, data)
typ, data = m.uid("MOVE", "1:*", dest)
assert typ == "OK", (typ, data)
print("moved:", m.untagged_responses.get("OK", data))
m.logout()
