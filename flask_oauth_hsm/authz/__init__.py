"""The authorization request pipeline (RFC 6749 §4.1, OAuth 2.1, RFC 9700, OIDC Core §3.1).

One request passes these steps, one module each:

1. :mod:`.params` — read the query (GET) or form (POST), each parameter once;
2. :mod:`.redirect` — the client, and its redirect URI by exact string comparison: failures are
   an error page, never a redirect;
3. :mod:`.sources` — where the parameters come from: the request itself, or (registered by later
   work) a pushed request (``request_uri``, RFC 9126) or a request object (``request``, RFC 9101);
4. :mod:`.request` — validate: ``response_type=code``, PKCE ``S256`` (:mod:`.pkce`), RFC 8707
   resources, scope, ``state``, ``nonce``, ``prompt``, ``max_age``, the ``claims`` parameter
   (:mod:`.claims`); errors go back to the redirect URI with ``state`` and ``iss`` (RFC 9207);
5. :mod:`.pending` — keep the request in Redis, bound to this browser, while the user signs in;
6. :mod:`.interaction` — the host's login (hooks), :mod:`.consent` (remembered, skipped, or the
   page from :mod:`.pages`), then a code (tokens/codes.py) or an error, at the redirect URI.
"""
