"""HTTP plumbing shared by the endpoints: reading requests, answering in JSON, redirect or page."""

from .client_ip import client_address
from .forms import FORM_TYPE, Form, parse_params, read_form, require_post
from .responses import NO_STORE, error_response, json_response, page_response, redirect_response

__all__ = [
    "FORM_TYPE",
    "Form",
    "NO_STORE",
    "client_address",
    "error_response",
    "json_response",
    "page_response",
    "parse_params",
    "read_form",
    "redirect_response",
    "require_post",
]
