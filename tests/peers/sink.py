"""A receiving MTA for tests: aiosmtpd on 127.0.0.1:PORT, each message saved to DIR as
N.eml with N.env holding the envelope (MAIL FROM on the first line, then RCPT TOs).
Recipients whose local part starts with "refuse" get a permanent 550, "slow" a 451.
Optional arguments: the address to bind (default 127.0.0.1), then a certificate and key
file to offer STARTTLS with; a message that came over TLS also gets an N.tls file. A sixth
argument "requiretls" offers REQUIRETLS (RFC 8689) over TLS; a message sent with it gets
an N.requiretls file. N.opts holds the MAIL FROM parameters. DATA is answered
"250 2.0.0 Ok: saved as N". Switches (--size=N, --no-smtputf8, --seven-bit) are below."""
import os
import re
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

# Switches, anywhere after the positional arguments: --size=N (SIZE N in EHLO, and 552 for
# more), --no-smtputf8 (SMTPUTF8, which aiosmtpd's controller offers, not offered),
# --seven-bit (neither 8BITMIME nor any BODY=, and 8-bit data refused: aiosmtpd's strict
# ASCII mode).
switches = [a for a in sys.argv[1:] if a.startswith("--")]
argv = [sys.argv[0]] + [a for a in sys.argv[1:] if not a.startswith("--")]
smtp_kwargs = {}
for switch in switches:
    if switch.startswith("--size="):
        smtp_kwargs["data_size_limit"] = int(switch.split("=", 1)[1])
    elif switch == "--no-smtputf8":
        smtp_kwargs["enable_SMTPUTF8"] = False
    elif switch == "--seven-bit":
        smtp_kwargs["decode_data"] = True
    else:
        sys.exit(f"unknown switch {switch}")
port, out = int(argv[1]), argv[2]
host = argv[3] if len(argv) > 3 else "127.0.0.1"
tls = None
if len(argv) > 5:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(argv[4], argv[5])
requiretls = len(argv) > 6 and argv[6] == "requiretls"
os.makedirs(out, exist_ok=True)
lock = threading.Lock()


class Smtp(SMTP):
    async def smtp_MAIL(self, arg):
        # aiosmtpd refuses parameters it does not know: REQUIRETLS is taken off first.
        self.session.requiretls = False
        if requiretls and arg and re.search(r"\sREQUIRETLS\b", arg, re.I):
            arg = re.sub(r"\s+REQUIRETLS\b", "", arg, flags=re.I)
            self.session.requiretls = True
        return await super().smtp_MAIL(arg)


class Sink(Controller):
    def factory(self):
        return Smtp(self.handler, **self.SMTP_kwargs)


class Save:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if requiretls and session.ssl is not None:
            responses.insert(-1, "250-REQUIRETLS")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 No such user here"
        if local.startswith("slow"):
            return "451 4.2.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with lock:
            n = len([f for f in os.listdir(out) if f.endswith(".eml")])
            with open(os.path.join(out, f"{n}.env.tmp"), "w") as f:
                f.write(envelope.mail_from + "\n" + "\n".join(envelope.rcpt_tos) + "\n")
            with open(os.path.join(out, f"{n}.eml.tmp"), "wb") as f:
                f.write(envelope.original_content)
            if session.ssl is not None:
                with open(os.path.join(out, f"{n}.tls"), "w") as f:
                    f.write(str(session.ssl.get("cipher")) + "\n")
            if getattr(session, "requiretls", False):
                open(os.path.join(out, f"{n}.requiretls"), "w").close()
            # The MAIL FROM parameters (BODY=, SMTPUTF8, SIZE=…), one a line.
            with open(os.path.join(out, f"{n}.opts"), "w") as f:
                f.write("".join(o + "\n" for o in envelope.mail_options))
            os.rename(os.path.join(out, f"{n}.env.tmp"), os.path.join(out, f"{n}.env"))
            os.rename(os.path.join(out, f"{n}.eml.tmp"), os.path.join(out, f"{n}.eml"))
        # A queue id as real MTAs give one, for the sender's log to quote.
        return f"250 2.0.0 Ok: saved as {n}"


controller = Sink(Save(), hostname=host, port=port, tls_context=tls, **smtp_kwargs)
controller.start()
print("ready", flush=True)
threading.Event().wait()
