"""Helpers of the REST API tests: tokens made through the service layer, a JSON client over
the panel's Flask application from its own client address."""
from __future__ import annotations

import itertools
import uuid

_addresses = itertools.count(1)


def make_token(node, role="superadmin", domains=(), expires=None) -> tuple[str, str]:
    """(name, secret) of a new token."""
    name = f"t-{role[:5]}-{uuid.uuid4().hex[:8]}"
    made = node.app.api_tokens.add(name, role, list(domains), expires)
    return name, made["token"]


class ApiClient:
    def __init__(self, app, secret: str | None):
        n = next(_addresses)
        self.address = f"172.{16 + ((n >> 16) & 15)}.{(n >> 8) & 255}.{n & 255}"
        self.http = app.test_client()
        self.http.environ_base["REMOTE_ADDR"] = self.address
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}

    def request(self, method, path, json=None, headers=None, **kw):
        return self.http.open(f"/api/v1{path}", method=method, json=json, base_url="https://localhost",
                              headers={**self.headers, **(headers or {})}, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)
