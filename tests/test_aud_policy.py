"""Every cell of the ``aud`` policy table (aud_table.py, docs/security.md) at every endpoint that
receives client assertions: every policy × every shape of ``aud``."""

from __future__ import annotations

import pytest

from as_helpers import assertion_form, claims_for
from aud_table import POLICIES, REQUEST_OBJECT_ENDPOINTS, SHAPES, aud_value, expected

# Clients of the default scenario registered with each policy; issuer+array is a global opt-in.
CLIENT_FOR = {"issuer": "c-issuer", "issuer+array": "c-es256", "endpoint": "c-endpoint", "legacy": "c-legacy"}
AUTHENTICATED = {"token": 200, "introspection": 403, "revocation": 200}  # a client at introspection: 403 after auth
AUTHENTICATED["backchannel_authentication"] = 200  # CIBA: the ciba scenario has a client per policy too


@pytest.fixture(scope="module")
def issuer_array_env(make_as):
    return make_as(OAUTH_HSM_AUD_ISSUER_ARRAY="true")


@pytest.fixture(scope="module")
def ciba_envs(make_ciba_as):
    """CIBA hosts (tests/ciba_helpers.py): the default policy, and the issuer-array opt-in."""
    return {"plain": make_ciba_as(), "array": make_ciba_as(OAUTH_HSM_AUD_ISSUER_ARRAY="true")}


def _request(env, endpoint: str, client_id: str, aud):
    form = assertion_form(env.keys[client_id].jws(claims_for(client_id, aud)))
    if endpoint == "token":
        return env.client().post("/oauth2/token", data=form)
    form = {k: v for k, v in form.items() if k != "grant_type"}
    if endpoint == "backchannel_authentication":
        return env.client().post("/oauth2/bc-authorize", data={**form, "scope": "openid", "login_hint": "alice"})
    path = "/oauth2/introspect" if endpoint == "introspection" else "/oauth2/revoke"
    return env.client().post(path, data={**form, "token": "not-a-token"})


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("endpoint", ["token", "introspection", "revocation", "backchannel_authentication"])
def test_aud_policy_cell(as_env, issuer_array_env, ciba_envs, endpoint, policy, shape):
    env = issuer_array_env if policy == "issuer+array" else as_env
    if endpoint == "backchannel_authentication":
        env = ciba_envs["array" if policy == "issuer+array" else "plain"]
    response = _request(env, endpoint, CLIENT_FOR[policy], aud_value(shape, endpoint))
    if expected(policy, shape, endpoint):
        assert response.status_code == AUTHENTICATED[endpoint], (endpoint, policy, shape, response.get_json())
    else:
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_client", (endpoint, policy, shape)


def test_resource_server_override_applies_at_introspection(as_env):
    """rs-3 is registered with the endpoint policy: the issuer alone no longer authenticates it."""
    token = "not-a-token"
    form = assertion_form(as_env.keys["rs-3"].jws(claims_for("rs-3", aud_value("issuer string", "introspection"))))
    del form["grant_type"]
    assert as_env.client().post("/oauth2/introspect", data={**form, "token": token}).status_code == 401
    form = assertion_form(as_env.keys["rs-3"].jws(claims_for("rs-3", aud_value("receiving endpoint URL", "introspection"))))
    del form["grant_type"]
    response = as_env.client().post(
        "/oauth2/introspect", data={**form, "token": token}, headers={"Accept": "application/token-introspection+jwt"}
    )
    assert response.status_code == 200


def test_the_docs_show_this_table():
    """docs/endpoints.md's aud table says, cell by cell, what the tests above check."""
    from pathlib import Path

    from aud_table import TABLE

    page = (Path(__file__).resolve().parent.parent / "docs" / "endpoints.md").read_text()
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith("`") and cells[0].split("`")[1] in ("issuer", "endpoint", "legacy") and len(cells) == 8:
            rows[cells[0].split("`")[1]] = cells[1:]
    shapes = [
        "issuer string",
        "issuer in array",
        "token endpoint URL",
        "receiving endpoint URL",
        "another endpoint's URL",
        "other value",
        "array with two members",
    ]
    for policy, column in (("issuer", 0), ("endpoint", 2), ("legacy", 3)):
        for shape, cell in zip(shapes, rows[policy], strict=True):
            documented = cell.startswith("accept") or cell.startswith("only at the token endpoint")
            expected = TABLE[shape][column] or (policy == "endpoint" and shape == "token endpoint URL")
            assert documented == expected, (policy, shape, cell)
    assert "accept with `OAUTH_HSM_AUD_ISSUER_ARRAY=true`" in rows["issuer"][1] and TABLE["issuer in array"][1]


# --- PAR and request objects (issue 12) -------------------------------------------------------------------
# The same table, cell by cell: client assertions at /par, and request objects received at
# /authorize and at /par (whose aud policy is the client's, with the receiving endpoint's URL).

PAR_CLIENT_FOR = {"issuer": "jar-issuer", "issuer+array": "jar", "endpoint": "jar-endpoint", "legacy": "jar-legacy"}


@pytest.fixture(scope="module")
def par_envs(make_user_as):
    from par_helpers import par_scenario

    scenario = par_scenario()
    return {
        "plain": make_user_as(scenario, OAUTH_HSM_CONSENT_LIFETIME="0"),
        "issuer+array": make_user_as(scenario, OAUTH_HSM_CONSENT_LIFETIME="0", OAUTH_HSM_AUD_ISSUER_ARRAY="true"),
    }


def _par_env(par_envs, policy: str):
    return par_envs["issuer+array" if policy == "issuer+array" else "plain"]


def _pushed(client_id: str) -> dict:
    from par_helpers import redirect_for
    from user_host import pkce_pair

    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_for(client_id),
        "scope": "openid read",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
    }


def _good_assertion_aud(policy: str, endpoint: str):
    return aud_value("receiving endpoint URL" if policy == "endpoint" else "issuer string", endpoint)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", POLICIES)
def test_aud_policy_cell_of_client_assertions_at_par(par_envs, policy, shape):
    from par_helpers import push

    client_id = PAR_CLIENT_FOR[policy]
    response = push(_par_env(par_envs, policy), client_id, aud_value(shape, "par"), **_pushed(client_id))
    if expected(policy, shape, "par"):
        assert response.status_code == 201, (policy, shape, response.get_json())
    else:
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_client", (policy, shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("endpoint", REQUEST_OBJECT_ENDPOINTS)
def test_aud_policy_cell_of_request_objects(par_envs, endpoint, policy, shape):
    from par_helpers import push, request_claims, sign
    from user_host import Browser

    env, client_id = _par_env(par_envs, policy), PAR_CLIENT_FOR[policy]
    request_object = sign(env, client_id, request_claims(client_id, aud_value(shape, endpoint)))
    if endpoint == "par":
        response = push(env, client_id, _good_assertion_aud(policy, "par"), request=request_object)
        accepted = response.status_code == 201
        assert accepted or response.get_json()["error"] == "invalid_request_object", (policy, shape, response.get_json())
    else:
        answer = Browser(env.app).authorize({"client_id": client_id, "request": request_object})
        accepted = answer.code is not None
        assert accepted or answer.params.get("error") == "invalid_request_object", (policy, shape, answer)
    assert accepted == expected(policy, shape, endpoint), (endpoint, policy, shape)


def test_the_docs_name_every_receiver_of_the_policy():
    """docs/endpoints.md's "Where the policy applies" lists each endpoint whose cells are tested here."""
    from pathlib import Path

    from aud_table import ASSERTION_ENDPOINTS, PATHS

    page = (Path(__file__).resolve().parent.parent / "docs" / "endpoints.md").read_text()
    section = page.split("### Where the policy applies", 1)[1].split("\n## ", 1)[0]
    rows = {
        tuple(c.strip() for c in line.strip().strip("|").split("|")[:2]) for line in section.splitlines() if line.startswith("| ")
    }
    for endpoint in ASSERTION_ENDPOINTS:
        assert ("client assertions", f"`{PATHS[endpoint].removeprefix('/oauth2')}`") in rows, endpoint
    for endpoint in REQUEST_OBJECT_ENDPOINTS:
        assert ("request objects", f"`{PATHS[endpoint].removeprefix('/oauth2')}`") in rows, endpoint


# --- CIBA (issue 12): signed authentication requests at /bc-authorize -----------------------------------
# The same table for the aud of the signed request (CIBA Core §7.1.1), with /bc-authorize as the
# receiving endpoint; the client assertion beside it always has a good aud.


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", POLICIES)
def test_aud_policy_cell_of_signed_authentication_requests(ciba_envs, policy, shape):
    from ciba_helpers import request_claims, signed_request

    env, client_id = ciba_envs["array" if policy == "issuer+array" else "plain"], CLIENT_FOR[policy]
    claims = request_claims(env, client_id, aud_value(shape, "backchannel_authentication"))
    response = signed_request(env, client_id, claims, assertion_aud=_good_assertion_aud(policy, "backchannel_authentication"))
    accepted = response.status_code == 200
    assert accepted or response.get_json()["error"] == "invalid_request", (policy, shape, response.get_json())
    assert accepted == expected(policy, shape, "backchannel_authentication"), (policy, shape)
