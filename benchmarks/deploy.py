#!/usr/bin/env python3
"""Deploy cost: a full deploy (render, validate, switch, start every daemon, probe) and a
no-change redeploy, with 100 and with 100,000 mailboxes in the database, in one run; then
the time of a plan, of a parameter-change deploy, of an automatic rollback (a deploy whose
probe fails) and of a rollback by hand, and the messages lost while SMTP traffic runs
through a good and a rolled-back deploy.

Usage: benchmarks/deploy.py [--quick] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support

from benchmarks.common import bulk_mailboxes, node_instance, timed  # noqa: E402


def measure(inst, mailboxes: int, repeat: int) -> dict:
    bulk_mailboxes(inst, mailboxes)
    app = inst.app

    def nothing_live():
        app.component_runtime.stop()
        app.layout.current.unlink(missing_ok=True)

    def full():  # render, validate, switch, start every daemon, probe
        result = app.deploys.deploy()
        assert result.result == "applied", result.result

    def no_change():
        result = app.deploys.deploy()
        assert result.result == "unchanged" and not result.reloaded

    full_s, full_all = timed(full, repeat, setup=nothing_live)
    same_s, same_all = timed(no_change, repeat * 3)
    return {"mailboxes": mailboxes, "full_s": full_s, "full_runs": full_all, "no_change_s": same_s,
            "no_change_runs": same_all}


def measure_safety(inst, repeat: int) -> dict:
    """Plan, changed deploy, automatic and manual rollback; messages lost under traffic."""
    import yaml

    from rupost.errors import DeployError
    from rupost.templating import load_document

    app = inst.app
    base = dict(inst.parameters)
    changed = {**base, "message_size_limit": 41943040}
    data = yaml.safe_load(app.templates.show("standard")["body"])
    data["components"]["nginx"]["mail_proxies"][0]["upstream"] = "127.0.0.1:9"  # IMAPS probe fails
    broken = load_document(yaml.safe_dump(data), "broken")

    plan_s, _ = timed(lambda: app.deploys.plan(changed), repeat * 3)

    def deploy_changed():
        assert app.deploys.deploy(app.deploys.plan(changed)).result == "applied"

    def back_to_base():
        app.deploys.deploy(app.deploys.plan(base))

    def auto_rollback():
        try:
            app.deploys.deploy(app.deploys.plan(base, document=broken))
        except DeployError as exc:
            assert "rolled back" in str(exc)
        else:
            raise AssertionError("the broken deploy was applied")

    def manual_rollback():
        app.deploys.rollback()

    changed_s, _ = timed(deploy_changed, repeat, setup=back_to_base)
    auto_s, _ = timed(auto_rollback, repeat)
    manual_s, _ = timed(manual_rollback, repeat, setup=lambda: (back_to_base(), deploy_changed()))
    back_to_base()
    # a reload-only deploy (and back) must not refuse one connection; the broken deploy and its
    # rollback restart what they must, and there refusals are retried like an MTA would
    reload_only = traffic_through_deploys(inst, lambda: (deploy_changed(), back_to_base()))
    with_rollback = traffic_through_deploys(inst, lambda: (deploy_changed(), auto_rollback(), back_to_base()))
    return {"plan_s": plan_s, "changed_deploy_s": changed_s, "auto_rollback_deploy_s": auto_s,
            "manual_rollback_s": manual_s, "reload_only": reload_only, "with_rollback": with_rollback}


def traffic_through_deploys(inst, deploys, count: int = 60) -> dict:
    """SMTP messages sent in a bounded loop while `deploys` runs: how many were accepted and
    are in the mailbox, and how many connection attempts were refused or dropped (each one
    retried after 0.25 s, at most 40 times per message)."""
    import smtplib
    import threading
    import uuid
    from email.message import EmailMessage

    app = inst.app
    address, password = "traffic@bench.test", "traffic-password-1"
    if not any(d["name"] == "bench.test" for d in app.domains.list()):  # `--only deploy_safety`
        app.domains.add("bench.test")
    if not app.mailboxes.list(search=address):
        app.mailboxes.add(address, password)
    tag, accepted, refused = uuid.uuid4().hex[:8], [], []

    def send():
        for i in range(count):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "load@example.org", address, f"t {tag} {i}"
            msg.set_content("x")
            for _ in range(40):  # retried like an MTA would, on a refused or dropped connection
                try:
                    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=15) as smtp:
                        smtp.send_message(msg)
                    accepted.append(i)
                    break
                except (OSError, smtplib.SMTPException) as exc:
                    refused.append(f"{i}: {exc}")
                    time.sleep(0.25)
            time.sleep(0.05)

    thread = threading.Thread(target=send)
    thread.start()
    deploys()
    thread.join(300)
    return {"sent": count, "accepted": len(accepted), "refused": len(refused), "refusals": refused[:5],
            "delivered": count_delivered(inst, address, password, f"t {tag}", len(accepted))}


def count_delivered(inst, address, password, prefix, expected, timeout=60) -> int:
    import imaplib
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    imap = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=ctx)
    imap.login(address, password)
    deadline = time.monotonic() + timeout
    while True:
        imap.select("INBOX")
        found = len(imap.search(None, "SUBJECT", f'"{prefix}"')[1][0].split())
        if found >= expected or time.monotonic() > deadline:
            imap.logout()
            return found
        time.sleep(0.5)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 10,000 instead of 100,000")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    large = 10_000 if args.quick else 100_000
    repeat = 1 if args.quick else 3
    with node_instance() as (inst, _pg):
        small = measure(inst, 100, repeat)
        big = measure(inst, large, repeat)
        safety = measure_safety(inst, repeat)
    figures = {
        "deploy_s_100": round(small["full_s"], 3),
        f"deploy_s_{'10k' if args.quick else '100k'}": round(big["full_s"], 3),
        "redeploy_nochange_s_100": round(small["no_change_s"], 3),
        f"redeploy_nochange_s_{'10k' if args.quick else '100k'}": round(big["no_change_s"], 3),
        "deploy_ratio_large_vs_100": round(big["full_s"] / small["full_s"], 3),
        "redeploy_ratio_large_vs_100": round(big["no_change_s"] / small["no_change_s"], 3),
        "plan_s": round(safety["plan_s"], 3),
        "changed_deploy_s": round(safety["changed_deploy_s"], 3),
        "auto_rollback_deploy_s": round(safety["auto_rollback_deploy_s"], 3),
        "manual_rollback_s": round(safety["manual_rollback_s"], 3),
        "deploy_traffic_sent": safety["traffic_sent"],
        "deploy_traffic_lost": safety["traffic_sent"] - safety["traffic_delivered"],
    }
    print(f"{'mailboxes':>10}  {'full deploy s (median)':>22}  {'no-change redeploy s (median)':>30}")
    for row in (small, big):
        print(f"{row['mailboxes']:>10}  {row['full_s']:>22.3f}  {row['no_change_s']:>30.3f}")
    print(f"ratio large/100: full {figures['deploy_ratio_large_vs_100']}, "
          f"no-change {figures['redeploy_ratio_large_vs_100']}")
    print(f"plan {figures['plan_s']} s; parameter-change deploy {figures['changed_deploy_s']} s; "
          f"deploy with failed probe + automatic rollback {figures['auto_rollback_deploy_s']} s; "
          f"rollback by hand {figures['manual_rollback_s']} s")
    print(f"traffic through a good and a rolled-back deploy: {figures['deploy_traffic_sent']} accepted, "
          f"{figures['deploy_traffic_lost']} lost")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
