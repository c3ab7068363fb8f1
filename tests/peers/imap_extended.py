"""LIST-EXTENDED, LIST-STATUS, ESEARCH and CREATE-SPECIAL-USE from Python's imaplib (its
raw command path, as clients built on it send them): imap_extended.py PORT USER PASSWORD."""
import sys

from imap_tls import Checks, connect

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = connect(port)
m.login(user, password)
# imaplib keeps the greeting's (pre-login) list and checks ENABLE against it.
greeting_caps = m.capabilities
caps = m.capability()[1][0].decode().split()
# What login added is asked for again.
m.capabilities = tuple(caps)
check = Checks()


check("ENABLE before login", "ENABLE" in greeting_caps, greeting_caps)
for cap in ("LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "CREATE-SPECIAL-USE"):
    check(f"capability {cap}", cap in caps, caps)

typ, data = m._simple_command("CREATE", '"Old Mail"', "(USE (\\Archive))")
check("create with a special use", typ == "OK", data)
typ, data = m._simple_command("CREATE", "Bogus", "(USE (\\Nonsense))")
check("create with an unknown use", typ == "NO" and b"USEATTR" in data[0], data)
m.subscribe("Sent")
m._simple_command("CREATE", "Fruit")
m._simple_command("CREATE", "Fruit/Apple")
m.subscribe("Fruit/Apple")

typ, data = m._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
typ, lines = m._untagged_response(typ, data, "LIST")
check(
    "list special-use folders",
    typ == "OK" and b'(\\HasNoChildren \\Archive) "/" "Old Mail"' in lines and len(lines) == 6,
    lines,
)
typ, data = m._simple_command("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', '"F%"')
typ, lines = m._untagged_response(typ, data, "LIST")
check(
    "recursive match tells CHILDINFO",
    lines == [b'(\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))'],
    lines,
)

m.append("INBOX", "(\\Seen)", None, b"Subject: one\r\n\r\nbody\r\n")
m.append("INBOX", None, None, b"Subject: two\r\n\r\nbody\r\n")
m.append("INBOX", None, None, b"Subject: three\r\n\r\nbody\r\n")
typ, data = m._simple_command("LIST", '""', "INBOX", "RETURN", "(STATUS (MESSAGES UNSEEN))")
typ, status = m._untagged_response(typ, data, "STATUS")
m.untagged_responses.pop("LIST", None)
check("list-status", typ == "OK" and status == [b"INBOX (MESSAGES 3 UNSEEN 2)"], status)

# UTF8=ACCEPT (RFC 6855): imaplib's enable() switches it to sending UTF-8.
typ, data = m.enable("UTF8=ACCEPT")
enabled = m.untagged_responses.pop("ENABLED", None)
check("enable utf8", typ == "OK" and enabled == [b"UTF8=ACCEPT"], enabled)
typ, data = m.create('"Données"')
check("create a UTF-8 name", typ == "OK", data)
typ, data = m.list('""', '"Donn*"')
check("list it in UTF-8", data == ['(\\HasNoChildren) "/" "Données"'.encode()], data)

m.select("INBOX")
typ, data = m._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT)", "UNSEEN")
typ, found = m._untagged_response(typ, data, "ESEARCH")
check(
    "esearch",
    typ == "OK" and found[0].startswith(b'(TAG "') and found[0].endswith(b") MIN 2 MAX 3 COUNT 2"),
    found,
)
typ, data = m.uid("SEARCH", "RETURN", "(ALL)", "ALL")
typ, found = m.response("ESEARCH")
check("uid esearch", found and found[-1].endswith(b" UID ALL 1:3"), found)

# BINARY (RFC 3516): the attachment's own bytes, NULs and all, not its base64.
import base64
blob = bytes(range(256)) * 4
attached = (
    b"Subject: binary\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(blob).replace(b"\n", b"\r\n")
    + b"--b--\r\n"
)
m.append("INBOX", None, None, attached)
typ, data = m.fetch("4", "(BINARY.SIZE[2] BINARY.PEEK[2])")
check(
    "binary fetch",
    typ == "OK" and data[0][0].endswith(b"BINARY.SIZE[2] 1024 BINARY[2] ~{1024}") and data[0][1] == blob,
    data[0][0] if data and isinstance(data[0], tuple) else data,
)

m.logout()

# IMAP4rev2 and SEARCHRES from a second session.
r = connect(port)
r.login(user, password)
r.capabilities = tuple(r.capability()[1][0].decode().upper().split())
typ, data = r.enable("IMAP4rev2")
check("enable rev2", typ == "OK" and r.untagged_responses.pop("ENABLED", None) == [b"IMAP4rev2"], data)
typ, data = r.select("INBOX")
listed = r.untagged_responses.pop("LIST", None)
recent = r.untagged_responses.pop("RECENT", None)
check("rev2 select", typ == "OK" and listed == [b'(\\HasNoChildren) "/" INBOX'] and recent is None, (listed, recent))
typ, data = r._simple_command("SEARCH", "RETURN", "(SAVE)", "UNSEEN")
check("save a result", typ == "OK" and "ESEARCH" not in r.untagged_responses, data)
typ, data = r.fetch("$", "(UID)")
check("fetch $", typ == "OK" and data == [b"2 (UID 2)", b"3 (UID 3)", b"4 (UID 4)"], data)
typ, data = r._simple_command("SEARCH", "NOT", "$")
typ, found = r._untagged_response(typ, data, "ESEARCH")
check("rev2 search answers ESEARCH", found and found[0].endswith(b") ALL 1"), found)
r.logout()
if check.failed:
    sys.exit(1)
print("all done")
