"""docs/api.md's reference is rendered from the API's OpenAPI description of today."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rupost.api import reference

ROOT = Path(__file__).resolve().parent.parent


def test_reference_in_docs_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "api-reference"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_description_is_openapi_31_with_every_resource():
    spec = reference.description()
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/api/v1/domains", "/api/v1/mailboxes/{address}", "/api/v1/mailboxes/import", "/api/v1/aliases",
                 "/api/v1/distribution-lists/{address}/members", "/api/v1/jobs/{job_id}", "/api/v1/audit"):
        assert path in spec["paths"], path
    text = reference.render(spec)
    assert "`PATCH /api/v1/mailboxes/{address}`" in text and "`If-Match`" in text


def test_a_changed_description_is_noticed():
    spec = reference.description()
    doc = (ROOT / "docs" / "api.md").read_text()
    spec["paths"]["/api/v1/extra"] = {"get": {"responses": {"200": {"description": "OK"}}}}
    assert reference.update(doc, spec) != doc
