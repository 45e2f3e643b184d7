#!/usr/bin/env python3
# integration/notify_listen.py: a stand-in for systemd's notification socket, to check what
# `fhirsync sync --every` says through sd_notify(3). Usage: notify_listen.py SOCKET OUT [SECONDS]:
# binds a unix datagram socket at SOCKET and appends one JSON line per datagram to OUT,
# {"t": <monotonic seconds>, "lines": ["READY=1", "STATUS=..."]}, flushed at once; exits after
# SECONDS (default 120) or on SIGTERM. (node's dgram module has no unix datagram sockets.)
import json
import os
import signal
import socket
import sys
import time

path, out = sys.argv[1], sys.argv[2]
limit = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(0.5)
deadline = time.monotonic() + limit
with open(out, "a", encoding="utf-8") as f:
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        lines = data.decode("utf-8", "replace").split("\n")
        f.write(json.dumps({"t": time.monotonic(), "lines": [l for l in lines if l]}) + "\n")
        f.flush()
os.unlink(path)
