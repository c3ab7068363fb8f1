"""Reads an SMTP TLS report mail (RFC 8460 §5.3) with Python's email library: checks its
multipart/report type and headers, and writes the gunzipped JSON of its
application/tlsrpt+gzip part to OUT. Usage: tlsrpt_extract.py MESSAGE OUT"""
import email
import email.policy
import gzip
import sys

message = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
assert message.get_content_type() == "multipart/report", message.get_content_type()
assert message.get_param("report-type") == "tlsrpt", message.get_param("report-type")
for header in ("TLS-Report-Domain", "TLS-Report-Submitter", "From", "Subject", "Date", "Message-ID"):
    assert message[header], f"no {header}"
parts = [p for p in message.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
assert len(parts) == 1, [p.get_content_type() for p in message.walk()]
name = parts[0].get_filename()
assert name.endswith(".json.gz") and name.count("!") == 4, name
open(sys.argv[2], "wb").write(gzip.decompress(parts[0].get_payload(decode=True)))
print(message["TLS-Report-Domain"], name)
