"""Directories: the distribution-lists updater and recipient lookups (docs/directories.md).

    python3 -m benchmarks.directories [--users 50000] [--lists 1000] [--samples 2000] [--json FILE]

- updater: a real slapd (AD-shaped) loaded with N users by slapadd, spread over as many
  departments as there are lists; one named LDAP filter ``(department=DeptNNNN)`` and one
  dynamic list per department; the time of one ``distribution-lists update`` run that
  fills every list (first run), of a run with nothing to change, and of a run after 5%
  of the users changed department.
- lookups: p50/p99 of the recipient lookups postfix makes, through the node's own
  proxymap socket: ``pgsql-mailboxes.cf`` (a mailbox), ``pgsql-recipients.cf`` (the
  submission smtpds' check that a list address exists: no mailbox, then the list) and ``pgsql-aliases.cf``
  (cleanup's expansion of a list address to its members), with 100 and with 100,000
  mailboxes present.
"""
from __future__ import annotations

import argparse
import json
import random
import time
import uuid

from .common import bulk_mailboxes, node_instance, summary_ms
from .lookups import ProxymapClient, timed_lookups, warm_up


def load_directory(server, users: int, departments: int, mail_domain: str) -> None:
    from support.slapd import ldif_entry, ssha

    password = ssha("Bench-pass-1")  # one hash: slapadd would spend minutes otherwise
    chunks = []
    for i in range(users):
        dn = f"cn=u{i},{server.users_dn}"
        chunks.append(ldif_entry(dn, {
            "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "user"],
            "cn": f"u{i}", "sn": f"User{i}", "sAMAccountName": f"u{i}", "mail": f"u{i}@{mail_domain}",
            "objectGUID": uuid.UUID(int=i + 1).bytes_le, "userAccountControl": "512",
            "department": f"Dept{i % departments:04d}", "userPassword": password}))
    server.start("\n".join(chunks))


def lookups(inst, table_name: str, keys: list[str]) -> dict:
    table = f"pgsql:{inst.layout.component_config('postfix') / f'pgsql-{table_name}.cf'}"
    pm = ProxymapClient(inst.layout.postfix_queue)
    try:
        warm_up(pm, table, keys)
        return summary_ms(timed_lookups(pm, table, keys))
    finally:
        pm.close()


def run(users: int = 50_000, lists: int = 1000, samples: int = 2000, big: int = 100_000) -> dict:
    from support.slapd import TempSlapd

    out: dict = {"users": users, "lists": lists}
    with node_instance("dirbench") as (inst, _pg):
        inst.deploy()
        app = inst.app
        root = inst.root
        mail_domain = "corp.bench"
        app.domains.add(mail_domain)
        server = TempSlapd(root.parent / "slapd", "ad")
        try:
            t0 = time.perf_counter()
            load_directory(server, users, lists, mail_domain)
            out["slapadd_s"] = round(time.perf_counter() - t0, 2)
            app.directories.add("corp", "ad", [server.ldaps_uri], server.users_dn, server.service_dn,
                                server.service_password, ca_pem=server.ca_pem, mail_domains=[mail_domain])
            t0 = time.perf_counter()
            for d in range(lists):
                app.ldap_filters.add(f"dept{d:04d}", "corp", f"(department=Dept{d:04d})")
                app.distribution_lists.add(f"dept{d:04d}@{mail_domain}", filter_name=f"dept{d:04d}",
                                           update_now=False)
            out["setup_lists_s"] = round(time.perf_counter() - t0, 2)

            def updater(label):
                t0 = time.perf_counter()
                results = app.distribution_lists.update()
                seconds = time.perf_counter() - t0
                statuses = {}
                for r in results:
                    statuses[r["status"]] = statuses.get(r["status"], 0) + 1
                out[label] = {"seconds": round(seconds, 2), "statuses": statuses,
                              "members_added": sum(r.get("added", 0) for r in results),
                              "members_dropped": sum(r.get("dropped", 0) for r in results)}

            updater("updater_first_run")
            updater("updater_no_change")
            rng = random.Random(5)
            moved = rng.sample(range(users), users // 20)
            ldif = "".join(f"dn: cn=u{i},{server.users_dn}\nchangetype: modify\nreplace: department\n"
                           f"department: Dept{(i + 1) % lists:04d}\n-\n\n" for i in moved)
            server.ldapmodify(ldif)
            updater("updater_5pct_moved")
            # recipient lookups: 100 mailboxes, then 100,000
            keys_lists = [f"dept{rng.randrange(lists):04d}@{mail_domain}" for _ in range(samples)]
            bulk_mailboxes(inst, 100, "look.bench")
            out["lookup_100"] = {
                "mailbox": lookups(inst, "mailboxes", [f"u{rng.randrange(100)}@look.bench" for _ in range(samples)]),
                "list_exists": lookups(inst, "recipients", keys_lists),
                "list": lookups(inst, "aliases", keys_lists)}
            bulk_mailboxes(inst, big, "look.bench")
            with app.dbs.engine("data").connect() as conn:
                conn.exec_driver_sql("ANALYZE")
            out[f"lookup_{big}"] = {
                "mailbox": lookups(inst, "mailboxes", [f"u{rng.randrange(big)}@look.bench" for _ in range(samples)]),
                "list_exists": lookups(inst, "recipients", keys_lists),
                "list": lookups(inst, "aliases", keys_lists)}
        finally:
            server.destroy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--lists", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run(args.users, args.lists, args.samples, args.big)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
