"""An SMTP server for tests that refuses every connection in its greeting, as a forged
or broken MX might: "554 5.3.2 Not accepting mail" on ADDRESS:25, then it closes."""
import socket
import sys
import threading

address = sys.argv[1]
listener = socket.create_server((address, 25))
print("ready", flush=True)


def refuse(conn):
    with conn:
        conn.sendall(b"554 5.3.2 Not accepting mail\r\n")


while True:
    conn, _ = listener.accept()
    threading.Thread(target=refuse, args=(conn,), daemon=True).start()
