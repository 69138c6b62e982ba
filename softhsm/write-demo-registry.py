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
    out = subprocess.run([flask, "--app", "example_app", "oauth-hsm", "keys", "jwks", *labels],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def demo_registry(resource: str) -> dict:
    return {
        "clients": [{
            "client_id": "demo-client",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks": jwks("demo-client-sig"),
            "grant_types": ["client_credentials"],
            "scope": "read write",
            "resources": [resource],
            "pop_keys": ["symmetric", "asymmetric"],
        }],
        "resource_servers": [{
            "resource": resource,
            "client_id": "demo-rs",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks("demo-rs-sig", "demo-rs-enc"),
            "scope": "read write",
            "introspection_signed_response_alg": "ES256",
            "introspection_encrypted_response_alg": "ECDH-ES+A256KW",
            "introspection_encrypted_response_enc": "A256GCM",
        }],
    }


def main(path: str) -> None:
    with open(path, "w") as fh:
        json.dump(demo_registry(os.environ["EXAMPLE_RESOURCE"]), fh, indent=2)
    print(f"[registry] wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
