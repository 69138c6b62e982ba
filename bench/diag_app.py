"""Issue 15 diagnosis only (never used by tests or the product): the example app with stage timers.

``diag_app:app`` is ``example_app.create_app()`` with a few of the token endpoint's functions
wrapped in timers that add up, per worker process, the *thread CPU time* (``time.thread_time``,
so time spent waiting for Redis, for the GIL or for a CPU is not counted) and the calls of each
stage. Every second each worker writes its totals to ``$DIAG_DIR/stage-<pid>.json``;
bench/profile_example.py ``--stages`` reads them before and after a run. Nothing else changes:
every check runs exactly as in the example app.

Stages are nested (``wsgi`` contains ``view``, which contains ``authenticate``, ...): the reader
subtracts inner stages to get each stage's own time. A wrapper costs about 1 µs of CPU per call.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time

_STATS: dict[str, list[float]] = {}
_LOCK = threading.Lock()


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.thread_time() - t0
            with _LOCK:
                s = _STATS.setdefault(name, [0, 0.0])
                s[0] += 1
                s[1] += dt

    return wrapper


def _patch(obj, attr: str, name: str) -> None:
    setattr(obj, attr, _timed(name, getattr(obj, attr)))


def _writer(directory: str) -> None:
    path = os.path.join(directory, f"stage-{os.getpid()}.json")
    while True:
        time.sleep(1.0)
        with _LOCK:
            data = json.dumps(_STATS)
        with open(path + ".tmp", "w") as fh:
            fh.write(data)
        os.replace(path + ".tmp", path)


def create_app():
    import dataclasses

    import example_app
    from flask_oauth_hsm import binding, events
    from flask_oauth_hsm.client_auth import private_key_jwt
    from flask_oauth_hsm.endpoints import token
    from flask_oauth_hsm.grants import GRANTS
    from flask_oauth_hsm.hsm.operations import TokenKey
    from flask_oauth_hsm.jose import jws
    from flask_oauth_hsm.tokens import access

    _patch(token, "read_form", "read_form")
    _patch(binding, "read_proofs", "binding")
    _patch(binding, "bind", "binding")
    _patch(token, "authenticate_caller", "authenticate")
    _patch(jws, "verify_signature", "ecdsa_verify")
    _patch(private_key_jwt, "_use_jti_once", "redis_use_once")
    grant = GRANTS["client_credentials"]
    GRANTS["client_credentials"] = dataclasses.replace(grant, handle=_timed("grant", grant.handle))
    _patch(access, "issue", "issue")
    _patch(TokenKey, "sign", "hsm_sign")  # with OAUTH_HSM_OPERATION_TIMEOUT=0: the sign runs in this thread
    _patch(token, "json_response", "json_response")
    _patch(events, "emit", "events")
    app = example_app.create_app()
    view = app.view_functions["oauth_hsm.token"]
    app.view_functions["oauth_hsm.token"] = _timed("view", view)
    app.wsgi_app = _timed("wsgi", app.wsgi_app)
    started = {"pid": None}

    def start_writer():
        if started["pid"] != os.getpid() and os.environ.get("DIAG_DIR"):  # after fork: one writer per worker
            started["pid"] = os.getpid()
            threading.Thread(target=_writer, args=(os.environ["DIAG_DIR"],), daemon=True).start()

    inner = app.wsgi_app

    def wsgi(environ, start_response):
        start_writer()
        return inner(environ, start_response)

    app.wsgi_app = wsgi
    return app


def __getattr__(name: str):
    if name in ("app", "application"):
        global app
        app = create_app()
        return app
    raise AttributeError(name)
