"""COMPRESS=DEFLATE (RFC 4978) from Python's imaplib, its reads and writes wrapped in zlib's
raw DEFLATE after the server's OK (as clients that support it do): the session goes on,
a large message travels both ways, and fewer bytes cross the wire than plain would.
imap_compress.py PORT USER PASSWORD"""
import sys
import imaplib
import zlib

from imap_tls import Checks, connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))
m = connect(port)
m.login(user, password)
caps = m.capability()[1][0].decode().split()
check = Checks()


check("capability COMPRESS=DEFLATE", "COMPRESS=DEFLATE" in caps, caps)
typ, data = m._simple_command("COMPRESS", "DEFLATE")
check("compress", typ == "OK", data)

# From here on, both directions are raw DEFLATE; count what crosses the wire.
wire = {"in": 0, "out": 0}
deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
inflate = zlib.decompressobj(-15)
plain = bytearray()
sock = m.sock


def send(data):
    out = deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH)
    wire["out"] += len(out)
    sock.sendall(out)


def fill(need_line=False, size=0):
    while (need_line and b"\n" not in plain) or (not need_line and len(plain) < size):
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("server closed")
        wire["in"] += len(chunk)
        plain.extend(inflate.decompress(chunk))


def readline():
    fill(need_line=True)
    end = plain.index(b"\n") + 1
    line = bytes(plain[:end])
    del plain[:end]
    return line


def read(size):
    fill(size=size)
    data = bytes(plain[:size])
    del plain[:size]
    return data


m.send, m.readline, m.read = send, readline, read

body = b"".join(b"line %d of a long and repetitive message body\r\n" % i for i in range(20000))
message = b"Subject: big\r\nFrom: a@b.test\r\n\r\n" + body
typ, data = m.append("INBOX", None, None, message)
check("append over deflate", typ == "OK", data)
typ, data = m.select("INBOX")
check("select over deflate", typ == "OK" and data == [b"1"], data)
typ, data = m.fetch("1", "(BODY.PEEK[TEXT])")
check("fetch over deflate", typ == "OK" and data[0][1] == body, len(data[0][1]) if data and data[0] else data)
typ, data = m._simple_command("COMPRESS", "DEFLATE")
check("a second COMPRESS is refused", typ == "NO" and b"COMPRESSIONACTIVE" in data[0], data)
typ, data = m.noop()
check("noop after", typ == "OK", data)
check(
    "fewer bytes on the wire",
    wire["in"] < len(body) / 5 and wire["out"] < len(body) / 5,
    wire,
)
m.logout()
if check.failed:
    sys.exit(1)
print("all done")
