"""Signs a message (stdin) with dkimpy and writes the signed message to stdout.
Arguments: PEM private key file, selector, domain."""
import sys

import dkim

key = open(sys.argv[1], "rb").read()
message = sys.stdin.buffer.read()
signature = dkim.sign(message, sys.argv[2].encode(), sys.argv[3].encode(), key,
                      include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
sys.stdout.buffer.write(signature + message)
