"""ManageSieve driven by sievelib (PyPI), a second client beside sieve-connect:
sievelib_session.py PORT USER PASSWORD. Ends saying "all done" when every answer was
as RFC 5804 says."""
import ssl
import sys

from sievelib import managesieve

# The server's certificate is self-signed: this client is told not to check it.
_default = ssl.create_default_context


def _unverified(*args, **kwargs):
    ctx = _default(*args, **kwargs)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


ssl.create_default_context = _unverified

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
LISTS = 'require ["fileinto", "imap4flags"];\nif header :contains "subject" "[rust]" {\n    fileinto :flags "\\\\Flagged" "Lists";\n}\n'
BROKEN = 'require "fileinto";\nfileinto;\n'


def expect(what, got, want):
    if got != want:
        print(f"{what}: got {got!r}, want {want!r}")
        sys.exit(1)


c = managesieve.Client("127.0.0.1", port)
expect("connect", c.connect(user, password, starttls=True, authmech="PLAIN"), True)
expect("implementation", c.get_implementation(), "ferrymail")
expect("vacation offered", "vacation" in c.get_sieve_capabilities(), True)
expect("havespace small", c.havespace("lists", 100), True)
expect("havespace large", c.havespace("big", 2_000_000), False)
expect("havespace code", c.errcode, b"QUOTA/MAXSIZE")
expect("checkscript broken", c.checkscript(BROKEN), False)
expect("the error names the line", b"line 2" in c.errmsg, True)
expect("putscript broken", c.putscript("bad", BROKEN), False)
expect("checkscript good", c.checkscript(LISTS), True)
expect("putscript", c.putscript("lists", LISTS), True)
expect("renamescript", c.renamescript("lists", "filters"), True)
expect("setactive", c.setactive("filters"), True)
active, others = c.listscripts()
expect("listscripts", (active, others), ("filters", []))
expect("deletescript active", c.deletescript("filters"), False)
expect("deletescript code", c.errcode, b"ACTIVE")
# sievelib joins the lines it reads without the last line end (sieve-connect, in the
# Rust test, compares the bytes).
expect("getscript", c.getscript("filters"), LISTS.rstrip("\n"))
expect("getscript missing", c.getscript("nope"), None)
expect("getscript code", c.errcode, b"NONEXISTENT")
c.logout()
print("all done")
