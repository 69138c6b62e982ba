"""Stopping the whole server when start-up finds a configuration error.

A wrong PIN must cost one login attempt per process and then stop the server: a real HSM locks
the PIN after a handful of failures. What happens after a process exits is decided by whatever
supervises it, and each one reads the exit status differently:

- gunicorn: a worker that exits with 3 (``WORKER_BOOT_ERROR``) or 4 (``APP_LOAD_ERROR``) halts
  the arbiter; any other status — 1 from ``raise SystemExit("message")`` — makes it boot a
  replacement at once, which logs in again: a login storm.
- Werkzeug's reloader (``flask run --debug``): a child that exits with 3 is restarted (3 means
  "a file changed"); any other status ends ``flask run``. Flask loads the app in the reloader's
  parent process first, so a configuration error there stops before any child starts.
- granian: any worker exit stops the server, whatever its status — unless
  ``--respawn-failed-workers`` is given. Then it respawns failed workers, and its crash-loop
  detection (a second failure of the same worker within 5.5 s) misses workers that fail in turn:
  measured, 4 workers made 131 wrong-PIN logins in 30 s. So a granian worker also asks the
  granian main process to shut down (SIGTERM, its own "stop" signal) before exiting.

4 is the one status all of them treat as final, so that is what we exit with. Anything above the
server (systemd, Kubernetes) restarts by its own rules: see docs/operations.md.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ConfigError

# gunicorn's APP_LOAD_ERROR: the arbiter halts ("App failed to load."). Not 3, which Werkzeug's
# reloader takes for "restart me".
CONFIG_ERROR_EXIT_STATUS = 4


@contextmanager
def stop_on_config_error(prefix: str = "flask-oauth-hsm") -> Iterator[None]:
    """Turn a ``ConfigError`` raised inside the block into one line on stderr and exit status 4.

    Wrap ``init_app`` (and ``ResourceProtector.init_app``) in your app factory::

        with stop_on_config_error():
            oauth.init_app(app)

    Also usable as a decorator of the factory. Other exceptions pass through unchanged.
    """
    try:
        yield
    except ConfigError as exc:
        # One clear line, never a traceback from deep inside PKCS#11 or redis-py.
        print(f"{prefix}: {exc}", file=sys.stderr, flush=True)
        _stop_respawning_parent()
        raise SystemExit(CONFIG_ERROR_EXIT_STATUS) from None


def _stop_respawning_parent() -> None:
    """In a granian worker, ask the main process to shut down instead of respawning us."""
    parent = multiprocessing.parent_process()
    # granian names its worker processes so (granian/server/mp.py, WorkerProcess._spawn).
    if parent is not None and parent.pid is not None and multiprocessing.current_process().name == "granian-worker":
        os.kill(parent.pid, signal.SIGTERM)
