#!/usr/bin/env python3
"""An OpenSSL-based HTTPS client for tests/certs_verify.rs: GET /healthz over and over, each on a
new connection with a full TLS handshake (no session resumption), verifying the server's
certificate against CAFILE and the name "localhost", as the API server's Go client would, but
with OpenSSL's chain building (Python's ssl module).

usage: handshakes.py HOST PORT CAFILE STOPFILE MAX_SECONDS

Prints one JSON object per line on stdout: first {"openssl": version}, then one per request:
{"t": unix time the request started, "ok": bool, "fp": SHA-256 of the served certificate (DER)
when the handshake got that far, "err": why it failed}. Stops when STOPFILE exists or after
MAX_SECONDS.
"""

import hashlib
import json
import os
import socket
import ssl
import sys
import time

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def read_reply(tls):
    """The status line and body of one HTTP/1.1 reply, read by Content-Length (not to EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} bytes of headers")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        body += chunk
    return lines[0].decode(errors="replace"), body[:length]


def one(ctx, host, port):
    rec = {"t": time.time(), "ok": False}
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                rec["fp"] = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
                tls.sendall(REQUEST)
                status, body = read_reply(tls)
        if status.startswith("HTTP/1.1 200") and body == b"ok\n":
            rec["ok"] = True
        else:
            rec["err"] = f"{status} {body[:80]!r}"
    except Exception as e:  # every failure is a result to report, not a crash
        rec["err"] = f"{type(e).__name__}: {e}"
    return rec


def main():
    host, port, cafile, stop, limit = sys.argv[1:6]
    port, limit = int(port), float(limit)
    # PROTOCOL_TLS_CLIENT: certificate and host name verification on.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    print(json.dumps({"openssl": ssl.OPENSSL_VERSION}), flush=True)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not os.path.exists(stop):
        print(json.dumps(one(ctx, host, port)), flush=True)


if __name__ == "__main__":
    main()
