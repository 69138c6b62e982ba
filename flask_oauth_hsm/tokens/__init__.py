"""Tokens we issue: RFC 9068 access tokens (signed in the token, optionally nested in a JWE)."""
