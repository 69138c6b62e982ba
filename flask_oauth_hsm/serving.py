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
  measured, 4 workers made 131 wrong-PIN logins in 30 s. So with that option a granian worker
  also asks the granian main process to shut down (SIGTERM, its own "stop" signal) before exiting
  (and only then: see ``_stop_respawning_parent``).

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
    """In a granian worker that granian would respawn, ask the main process to shut down instead.

    Only then: granian 2.8's SIGTERM handler sets the same ``threading.Event`` a worker's exit
    sets, and the handler can run in the main thread while that thread holds the event's lock
    (the signal was delivered to another thread, so it runs once the main thread wakes for our
    exit): the main process then hangs for ever with no worker left. Seen once in the clean-clone runs of
    tests/test_pin_storm.py::test_granian_stops[default]; without --respawn-failed-workers granian
    stops on our exit by itself."""
    parent = multiprocessing.parent_process()
    # granian names its worker processes so (granian/server/mp.py, WorkerProcess._spawn).
    if parent is None or parent.pid is None or multiprocessing.current_process().name != "granian-worker":
        return
    if _granian_respawns_failed_workers():
        os.kill(parent.pid, signal.SIGTERM)


CLICK_TRUE = {"1", "true", "t", "yes", "y", "on"}  # what click reads as true from GRANIAN_* variables


def _granian_respawns_failed_workers() -> bool:
    """Whether granian respawns failed workers. A worker has the granian command's argv and
    environment (forked or spawned); granian embedded through its Python API counts as respawning,
    since we cannot tell."""
    argv = sys.argv or [""]
    command = os.path.basename(argv[0]) == "granian" or argv[0].endswith(os.path.join("granian", "__main__.py"))
    if not command:
        return True
    flags = [a for a in argv if a in ("--respawn-failed-workers", "--no-respawn-failed-workers")]
    if flags:
        return flags[-1] == "--respawn-failed-workers"
    return os.environ.get("GRANIAN_RESPAWN_FAILED_WORKERS", "").strip().lower() in CLICK_TRUE
