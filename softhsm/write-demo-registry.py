"""Write the demo registry: a client and a resource server whose keys are in the dev token.

Run by run-example.sh (and by tests/test_docs_snippets.py) with softhsm/env.sh's settings:
``python softhsm/write-demo-registry.py PATH``. The public keys come from the dev token through
``flask oauth-hsm keys jwks``. A demo shortcut: in real life each party has its own HSM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def jwks(*labels: str) -> dict:
    flask = os.environ.get("FLASK") or os.path.join(os.path.dirname(sys.executable), "flask")
    out = subprocess.run(
        [flask, "--app", "example_app", "oauth-hsm", "keys", "jwks", *labels], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def demo_registry(resource: str) -> dict:
    issuer = os.environ["OAUTH_HSM_ISSUER"].rstrip("/")
    return {
        "clients": [
            {
                "client_id": "demo-client",
                "client_name": "Demo client",
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": "ES256",
                "jwks": jwks("demo-client-sig"),
                # the code flow (docs/users.md): example_app's /demo pages, and
                # `demo-client --flow code` listening on a loopback port
                "grant_types": [
                    "client_credentials",
                    "authorization_code",
                    "refresh_token",
                    "urn:openid:params:grant-type:ciba",
                ],  # CIBA: demo-client --flow ciba, the /ciba page
                "backchannel_token_delivery_mode": "poll",
                "redirect_uris": [
                    issuer + "/demo/callback",
                    os.environ.get("EXAMPLE_DEMO_CALLBACK", "http://127.0.0.1:8765/callback"),
                ],
                "scope": "openid profile email read write",
                "resources": [resource],
                "pop_keys": ["symmetric", "asymmetric"],
            }
        ],
        "resource_servers": [
            {
                "resource": resource,
                "client_id": "demo-rs",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks("demo-rs-sig", "demo-rs-enc"),
                "scope": "read write",
                "introspection_signed_response_alg": "ES256",
                "introspection_encrypted_response_alg": "ECDH-ES+A256KW",
                "introspection_encrypted_response_enc": "A256GCM",
                "introspection_claims": ["email", "username"],  # with the user's consent only
            }
        ],
    }


def main(path: str) -> None:
    with open(path, "w") as fh:
        json.dump(demo_registry(os.environ["EXAMPLE_RESOURCE"]), fh, indent=2)
    print(f"[registry] wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
