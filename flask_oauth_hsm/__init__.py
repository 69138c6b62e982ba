"""flask-oauth-hsm: an OAuth 2.0 authorization server for Flask whose keys never leave the HSM."""

from .extension import OAuthHSM, current_state
from .resource import ResourceProtector

__all__ = ["OAuthHSM", "ResourceProtector", "current_state"]
__version__ = "0.1.0"
