#!/usr/bin/env python3
"""Issue 15 diagnosis: what each stage of a token request costs, in µs, measured in one process.

    .venv/bin/python bench/stage_costs.py

No HTTP server: the example app (softhsm/env.sh settings, as bench/peer_ab.py configures it) is
built in this process, and its WSGI callable is called with pre-built environs, one unique
pre-signed assertion each. Then each stage of the request is timed on its own by calling the
same functions the endpoint calls (flask_oauth_hsm.http.read_form, client_auth.*, store.use_once,
access_tokens.issue, ...). Each figure is the median over 5 repetitions of a timed loop, in µs
of wall time per call, single-threaded; the process also reports the CPU time it used, and the
other load on the machine (shared: compare stages within one run, not across runs).

The difference between the whole WSGI call and the sum of the endpoint's stages is Flask and
Werkzeug (request context, routing, Request/Response objects). What a WSGI server adds on top
(HTTP parsing, sockets, access log, threads) is measured by bench/example_variants.py --app noop
and the servers table in docs; this script is the in-process part.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import peer_ab  # noqa: E402

REPEATS = 5


def timed(fn, n: int) -> str:
    """"wall | CPU" µs per call: medians over REPEATS loops of n calls (fn gets the call index)."""
    wall, cpu = [], []
    for rep in range(REPEATS):
        base = rep * n
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            fn(base + i)
        wall.append((time.perf_counter() - t0) / n * 1e6)
        cpu.append((time.process_time() - c0) / n * 1e6)
    w, c = statistics.median(wall), statistics.median(cpu)
    return f"{w:.1f} | {c:.1f}" if w < 20 else f"{w:.0f} | {c:.0f}"


def environ_for(path: str, body: str) -> dict:
    from werkzeug.test import EnvironBuilder

    env = EnvironBuilder(path=path, method="POST", data=body.encode(), content_type=peer_ab.FORM["Content-Type"],
                         base_url="http://127.0.0.1:5000").get_environ()
    env["REMOTE_ADDR"] = "127.0.0.1"
    return env


def call_wsgi(app, env: dict) -> tuple[str, bytes]:
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["_body"])
    out = b"".join(app(env, start_response))
    return status[0], out


def main() -> int:
    out = benchlib.Report("stage_costs")
    started = time.monotonic()
    out.line("# bench/stage_costs.py — µs per stage of POST /oauth2/token, in one process (no HTTP server)")
    benchlib.print_facts(out)
    from as_helpers import ClientKey

    key = ClientKey.new("ES256")
    ours = peer_ab.Ours(key, {})
    try:
        return run(out, ours, key, started)
    finally:
        ours.close()


def run(out, ours, key, started) -> int:
    import os

    issuer = "http://127.0.0.1:5000"
    resource = issuer + "/api"
    n = 1500
    rows = []
    system = benchlib.SystemMeter()
    system.start()
    cpu0 = time.process_time()

    for alg in ("ES256", "PS256"):
        settings = ours.settings(issuer, resource, alg)
        os.environ.update(settings)
        # a fresh import per alg would be cleaner; the app reads settings at create_app()
        import example_app

        app = example_app.create_app()
        benchlib.wait_for_epoch(ours.redis.url)
        target = peer_ab.Target("in-process", None, 5000, "/oauth2/token", "/oauth2/jwks", issuer, resource, Path("."), "")
        count = n * REPEATS + 10
        bodies = peer_ab.bodies(target, key, count)
        envs = []
        for b in bodies:
            e = environ_for("/oauth2/token", b)
            e["_body"] = b.encode()
            envs.append(e)
        st, body = call_wsgi(app, envs[-1])
        assert st.startswith("200") and b'"access_token":"ey' in body, (st, body[:200])
        rows.append([f"whole WSGI call, example app, {alg} access token", timed(lambda i: call_wsgi(app, envs[i]), n)])  # noqa: B023 - timed() calls it now
        if alg == "ES256":
            es_app = app
        else:
            ps_app = app
        del sys.modules["example_app"]

    # the do-nothing Flask view (bench/noop_app.py), same Flask/Werkzeug
    import noop_app

    noop_env = environ_for("/oauth2/token", "x=1")
    noop_env["_body"] = b"x=1"
    rows.append(["whole WSGI call, do-nothing Flask view (bench/noop_app.py)", timed(lambda i: call_wsgi(noop_app.app, noop_env), 5000)])
    rows.append(["whole WSGI call, bare WSGI callable (bench/noop_app.py bare)", timed(lambda i: call_wsgi(noop_app.bare, noop_env), 20000)])

    # --- the stages, on the ES256 app --------------------------------------------------------------
    from flask_oauth_hsm import access_tokens, client_auth, events
    from flask_oauth_hsm.endpoints import common, token as token_ep
    from flask_oauth_hsm.http import json_response, read_form
    from flask_oauth_hsm.jose import jws, jwt

    app = es_app
    state = app.extensions["oauth_hsm"]
    policy = state.policies["token"]
    client = state.registry.client(peer_ab.CLIENT_ID)
    target = peer_ab.Target("in-process", None, 5000, "/oauth2/token", "/oauth2/jwks", issuer, resource, Path("."), "")
    count = 3000 * REPEATS + 10
    fresh = peer_ab.bodies(target, key, count)
    from urllib.parse import parse_qsl

    assertions = [dict(parse_qsl(b))["client_assertion"] for b in fresh]
    envs = []
    for b in fresh[:n * REPEATS + 10]:
        e = environ_for("/oauth2/token", b)
        e["_body"] = b.encode()
        envs.append(e)

    from flask import Request

    def with_request(i):
        e = dict(envs[i])
        e["wsgi.input"] = io.BytesIO(e["_body"])
        return Request(e)

    reqs = [with_request(i) for i in range(n * REPEATS + 10)]
    with app.test_request_context():
        rows.append(["read_form (bounded body read, parse_qsl, duplicate check)",
                     timed(lambda i: read_form(reqs[i], state.settings.max_body_bytes, frozenset({'resource'})), n)])
        forms = [read_form(with_request(i), state.settings.max_body_bytes, frozenset({"resource"})) for i in range(n * REPEATS + 10)]
        rows.append(["presented_credentials", timed(lambda i: client_auth.presented_credentials(None, forms[i]), n)])
        rows.append(["jws.Unverified (split, strict base64url, header JSON + checks) + decode_claims",
                     timed(lambda i: jwt.decode_claims(jws.Unverified(assertions[i]).payload), n)])
        unv = [jws.Unverified(a) for a in assertions]
        select = lambda h: client.jwks.select(h["alg"], "sig", h.get("kid"))  # noqa: E731
        rows.append(["ES256 verify of the assertion (key select + cryptography)",
                     timed(lambda i: unv[i].verify(select, ('ES256',)), n)])
        claims = [jwt.decode_claims(u.payload) for u in unv]
        rows.append(["check_assertion_claims (iss/sub, aud policy, exp/iat/nbf, jti)",
                     timed(lambda i: client_auth.check_assertion_claims(claims[i], client.client_id, policy, client.aud_policy), n)])
        rows.append(["store.use_once: Redis EVALSHA round trip (replay check)",
                     timed(lambda i: client_auth._use_jti_once(claims[i], client.client_id, policy, state), n)])
        later_forms = [_form_for(fresh, n * REPEATS + 5 + i) for i in range(n * REPEATS)]  # unused assertions
        rows.append(["whole client authentication (authenticate: all of the above but read_form)",
                     timed(lambda i: common.authenticate_caller(state, later_forms[i], 'token', 'client'), n)])
        rs = state.registry.resource_server_for(resource)
        rows.append(["grant type, resources, scope checks",
                     timed(lambda i: (token_ep.check_grant_type(forms[i], client), token_ep.requested_scope(forms[i], client, token_ep.requested_resources(state, forms[i], client))), n)])
        rows.append(["access_tokens.issue, ES256 (claims, JSON, HSM sign through our layer)",
                     timed(lambda i: access_tokens.issue(state, client, frozenset({'read'}), [rs]), n)])
        rows.append(["  of which HSM sign alone, ES256 (TokenKey.sign: session pool + C_Sign)",
                     timed(lambda i: state.keys.signing.sign(b'x' * 300), n)])
        ps_state = ps_app.extensions["oauth_hsm"]
        rows.append(["access_tokens.issue, PS256", timed(lambda i: access_tokens.issue(ps_state, client, frozenset({'read'}), [rs]), 300)])
        rows.append(["  of which HSM sign alone, PS256", timed(lambda i: ps_state.keys.signing.sign(b'x' * 300), 300)])
        body = {"access_token": "x" * 560, "token_type": "Bearer", "expires_in": 300, "scope": "read"}
        rows.append(["json_response (json.dumps + Flask Response)", timed(lambda i: json_response(body), n)])
        rows.append(["events.emit(token_issued) (logger off, no receivers)",
                     timed(lambda i: events.emit(events.token_issued, client_id='c', jti='j', aud='a', scope='s'), n)])

    window, busy = system.stop()
    cpu = time.process_time() - cpu0
    out.section("µs per call, one thread: wall time | CPU time of this process (medians of 5 loops)")
    out.table(["stage", "µs wall | CPU"], rows)
    out.line()
    out.line(f"this process used {cpu / window:.2f} cores of the window; whole machine busy {busy / window:.2f} cores "
             f"(other load ≈ {max(0.0, busy - cpu) / window:.2f} cores, redis included)")
    out.line()
    return benchlib.finish(out, started)


def _form_for(bodies, i):
    from urllib.parse import parse_qsl

    from flask_oauth_hsm.http import Form

    pairs = parse_qsl(bodies[i])
    single = {k: v for k, v in pairs if k != "resource"}
    return Form(single, {"resource": [v for k, v in pairs if k == "resource"]})


if __name__ == "__main__":
    sys.exit(main())
