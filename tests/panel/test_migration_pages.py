"""The panel's migration page: groupware jobs (calendars and contacts) with their reports, in
Russian and English, for any global administrator; a domain administrator does not see it."""
from __future__ import annotations

import uuid

from rupost.services.groupware_migration import UserResult, UserRow

from .conftest import text


def test_groupware_job_and_its_report_in_both_languages(node, readonly, admin_factory, make_client):
    target = f"ivan-{uuid.uuid4().hex[:6]}@panel-mig.test"
    service = node.app.groupware_migration
    row = UserRow(1, target, "/srv/export/ivan.ics + /srv/export/ivan.vcf")
    service._mark_running("files", row)
    reason = "unknown time zone 'Nowhere Standard Time' (DTSTART)"
    service._record("files", UserResult(row.login, target, status="incomplete", counts={
        "calendar": {"source": 3, "added": 2, "existing": 0, "refused": 1},
        "contacts": {"source": 201, "added": 201, "existing": 0, "refused": 0}},
        refused=[{"kind": "event", "uid": "UID-<b>bad</b>", "summary": "Zone <nobody> knows", "reason": reason}]))
    job = service.status(target)[0]["id"]

    page = text(readonly.get("/migration/"))  # Russian by default
    assert "Календари и контакты" in page and target in page and f"/migration/groupware/{job}" in page
    report = text(readonly.get(f"/migration/groupware/{job}"))
    assert "Не перенесено" in report and "Nowhere Standard Time" in report and "203" not in report
    assert "Zone &lt;nobody&gt; knows" in report and "<b>bad</b>" not in report  # escaped
    assert readonly.get("/migration/groupware/999999999").status_code == 404

    readonly.post("/language", {"lang": "en"})
    report = text(readonly.get(f"/migration/groupware/{job}"))
    assert "Not migrated" in report and "Already there" in report and "incomplete" in report

    node.app.domains.add(domain := f"d{uuid.uuid4().hex[:8]}.test")
    domain_admin = make_client()
    domain_admin.login(admin_factory("domain_admin", [domain]))
    assert domain_admin.get(f"/migration/groupware/{job}").status_code == 403
