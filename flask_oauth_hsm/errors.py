"""The package's own exceptions: a small, flat set.

Errors are data (Authlib style): each class names the OAuth/HTTP meaning it will have when an
endpoint maps it, so a PKCS#11 return code or library message never reaches a response.
Verification and decryption raise; they never return a bool (pyca/cryptography style).
"""


class OAuthHSMError(Exception):
    """Base of everything this package raises on purpose."""


class ConfigError(OAuthHSMError):
    """A setting or registry entry is wrong: start-up stops with this one-line message."""


# --- HSM boundary (only flask_oauth_hsm.hsm raises these) -----------------------------------


class HSMError(OAuthHSMError):
    """A PKCS#11 operation failed for a reason that is not the caller's input."""


class HSMUnavailable(HSMError):
    """Token gone, module failing, or session pool exhausted: endpoints answer 503."""

    status_code = 503


class HSMConfigError(HSMError, ConfigError):
    """Start-up problem with one line that names it (module path, token, PIN, key)."""


class WrongPin(HSMConfigError):
    """The token refused the PIN (never retried: tokens lock PINs after a few failures)."""


class KeyNotFound(HSMConfigError):
    """No key with the configured label in the token."""


class UnsafeKey(HSMConfigError):
    """A private key that is extractable or not sensitive: refused at start-up."""


class UnsupportedAlgorithm(OAuthHSMError):
    """An algorithm we never accept, or one this token cannot perform."""


# --- key rotation (keys/states.py) ------------------------------------------------------------


class KeyStateRefused(OAuthHSMError):
    """A key command refused: the key may still be needed, or the change would be unsafe now."""


# --- JOSE layer -------------------------------------------------------------------------------


class JoseError(OAuthHSMError):
    """Base of JOSE failures. Messages are safe to log, never to echo to a peer verbatim."""


class MalformedJose(JoseError):
    """Not a well-formed compact JWS/JWE/JWK: size, base64url, JSON, header members."""


class RefusedAlgorithm(JoseError):
    """alg/enc/header feature refused by policy before any cryptography ran."""


class InvalidSignature(JoseError):
    """The signature does not verify under the selected key."""


class DecryptionFailed(JoseError):
    """JWE could not be decrypted; one class for every cause (RFC 7516 §11.4, §11.5)."""


class InvalidKey(JoseError):
    """A JWK that is malformed, weak, private where public is expected, or off-curve."""


# --- Redis boundary ----------------------------------------------------------------------------


class StoreUnavailable(OAuthHSMError):
    """Redis unreachable, too slow, or its replay state cannot be trusted: endpoints answer 503."""


class StoreUnsafe(StoreUnavailable):
    """Redis answers but may drop live replay records (an eviction policy): not ready."""


class RegistryUnavailable(OAuthHSMError):
    """A host app's client or resource-server loader failed (its database is down): 503."""


# --- OAuth protocol errors (RFC 6749 §5.2, RFC 7009, RFC 7662, RFC 8707, RFC 6750) -------------


def safe_description(text: str) -> str:
    """RFC 6749 §5.2: error_description uses %x20-21 / %x23-5B / %x5D-7E only. Descriptions are
    our own sentences, never the request echoed; this is the net under that rule."""
    return "".join(c if (" " <= c <= "~" and c not in '"\\') else "?" for c in text)[:200]


class OAuthError(OAuthHSMError):
    """An error response. The class says what the peer sees; ``description`` is safe to show."""

    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(description or self.error)
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        out = {"error": self.error}
        if self.description:
            out["error_description"] = safe_description(self.description)
        return out


class InvalidRequestError(OAuthError):
    error = "invalid_request"


class RequestTooLargeError(OAuthError):
    error = "invalid_request"
    status_code = 413


class MethodNotAllowedError(OAuthError):
    error = "invalid_request"
    status_code = 405


class InvalidClientError(OAuthError):
    """RFC 6749 §5.2: 401 with a WWW-Authenticate challenge for the scheme the client used."""

    error = "invalid_client"
    status_code = 401


class UnauthorizedClientError(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthError):
    error = "unsupported_grant_type"


class InvalidScopeError(OAuthError):
    error = "invalid_scope"


class InvalidTargetError(OAuthError):
    """RFC 8707 §2: the requested resource is invalid, unknown or not allowed."""

    error = "invalid_target"


class AccessDeniedError(OAuthError):
    """Authenticated, but not entitled to this endpoint (a client calling introspection)."""

    error = "access_denied"
    status_code = 403


class InvalidGrantError(OAuthError):
    error = "invalid_grant"


class InvalidDPoPProofError(OAuthError):
    """RFC 9449 §5 (token endpoint) and §7.1 (resource server): the DPoP proof is invalid."""

    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuthError):
    """RFC 9449 §8: the proof must carry the server nonce sent in the ``DPoP-Nonce`` header."""

    error = "use_dpop_nonce"


class UnsupportedPoPKeyError(OAuthError):
    """RFC 9200 §5.8.3: a proof-of-possession key the audience resource server cannot process."""

    error = "unsupported_pop_key"


class TemporarilyUnavailableError(OAuthError):
    error = "temporarily_unavailable"
    status_code = 503


class RateLimitedError(OAuthError):
    """RFC 6585 §4: too many requests; ``Retry-After`` says when to come back."""

    error = "temporarily_unavailable"
    status_code = 429


# --- authorization endpoint and OpenID Connect (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6) ---------


class UnsupportedResponseTypeError(OAuthError):
    error = "unsupported_response_type"


class LoginRequiredError(OAuthError):
    """OIDC Core §3.1.2.6: prompt=none, or a fresh login was needed, and the user is not signed in."""

    error = "login_required"


class ConsentRequiredError(OAuthError):
    error = "consent_required"


class RequestNotSupportedError(OAuthError):
    """OIDC Core §6: the ``request`` parameter (a request object) is not supported yet."""

    error = "request_not_supported"


class RequestUriNotSupportedError(OAuthError):
    error = "request_uri_not_supported"


class InvalidRequestObjectError(OAuthError):
    """RFC 9101 §6.2, OIDC Core §3.1.2.6: the request object is invalid (signature, claims, replay)."""

    error = "invalid_request_object"


class InvalidRequestUriError(OAuthError):
    """RFC 9101 §6.2, RFC 9126 §4: the request_uri is unknown, expired, used, or another client's."""

    error = "invalid_request_uri"


class UserDeniedError(OAuthError):
    """RFC 6749 §4.1.2.1: the resource owner denied the request (redirected, never a 403 page)."""

    error = "access_denied"


class InvalidTokenError(OAuthError):
    """RFC 6750 §3.1: the access token presented to UserInfo is not valid (401 with a challenge)."""

    error = "invalid_token"
    status_code = 401


class InsufficientScopeError(OAuthError):
    error = "insufficient_scope"
    status_code = 403


class BrowserError(OAuthError):
    """An authorization request that cannot be answered at the client's redirect URI (unknown
    client, unregistered redirect URI, an expired or foreign pending request): the user sees an
    error page, and nothing is redirected (RFC 6749 §4.1.2.1, RFC 9700 §4.11)."""

    error = "invalid_request"


class HostHookFailed(OAuthHSMError):
    """A host hook (current user, user claims) raised: the host's user store is down, 503."""


# --- CIBA (OpenID CIBA Core 1.0 §13 authentication errors, §11 token errors) ---------------------


class UnknownUserIdError(OAuthError):
    """CIBA Core §13: the hint names no user we can identify."""

    error = "unknown_user_id"


class InvalidBindingMessageError(OAuthError):
    """CIBA Core §13: the binding message is invalid or unacceptable (too long, not printable)."""

    error = "invalid_binding_message"


class AuthorizationPendingError(OAuthError):
    """CIBA Core §11: the user has not decided yet; poll again after the interval."""

    error = "authorization_pending"


class SlowDownError(OAuthError):
    """CIBA Core §11: polling too fast; the interval of this request grew by 5 seconds."""

    error = "slow_down"


class ExpiredTokenError(OAuthError):
    """CIBA Core §11: the auth_req_id expired; the client must start a new request."""

    error = "expired_token"
