"""bjoern (a C WSGI server on libev, single-threaded) with N forked workers sharing one port
(SO_REUSEPORT), for the server comparison in bench/peer_ab.py and bench/example_variants.py.
Not a recommendation by itself: bjoern has no process manager, no timeouts, no TLS.

    python bench/bjoern_serve.py MODULE:ATTR PORT WORKERS

The app is loaded in the parent before fork (like gunicorn --preload; flask-oauth-hsm's PKCS#11
and Redis state are created lazily in each child). pip install bjoern (needs libev-dev).
"""

import contextlib
import importlib
import os
import signal
import sys

import bjoern


def main() -> None:
    target, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr or "app")
    bjoern.listen(app, "127.0.0.1", port, reuse_port=True)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            bjoern.run()
            os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in children:
        os.wait()


if __name__ == "__main__":
    main()
