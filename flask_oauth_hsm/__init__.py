"""flask-oauth-hsm: an OAuth 2.0 authorization server for Flask whose keys never leave the HSM."""

from .extension import OAuthHSM
from .rs import ResourceProtector
from .server import ServerContext, current
from .users import User

__all__ = ["OAuthHSM", "ResourceProtector", "ServerContext", "User", "current"]
__version__ = "0.1.0"
