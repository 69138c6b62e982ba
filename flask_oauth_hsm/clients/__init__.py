"""Clients and resource servers: the model, its validation, and where entries come from."""

from .model import Client, Credentials, IPNetwork, ResourceServer, parse_scope, valid_redirect_uri, valid_resource_uri
from .registry import ClientRegistry, LoaderRegistry, Registry

__all__ = [
    "Client",
    "ClientRegistry",
    "Credentials",
    "IPNetwork",
    "LoaderRegistry",
    "Registry",
    "ResourceServer",
    "parse_scope",
    "valid_redirect_uri",
    "valid_resource_uri",
]
