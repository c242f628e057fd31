"""The benchmark suite behind `benchmarks/run`: one node, one bare baseline, one run.

Sections run in order on one throwaway node (and PostgreSQL) under /tmp, on free
loopback ports; each is bounded in count and time. Every section is a function
`section(ctx) -> dict` listed in SECTIONS; its figures are merged into one flat JSON
object, and its targets (TARGETS) are checked and printed in one table.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rupost.passwords import hash_password

from . import bulk, capacity, cpu, deploy, imap, lookups, smtp, spread
from .antivirus import antivirus_cost
from .bare import BareStack
from .common import bulk_mailboxes, node_instance, shrink_mailboxes, summary_ms

PASSWORD = "bench-password"
DOMAIN = "bench.test"

FULL = {"smtp_messages": 2500, "smtp_size": 10240, "smtp_sessions": 20, "smtp_rounds": 6, "smtp_warmup": 300,
        "lookup_samples": 2000, "lookup_cycles": 2, "deploy_repeat": 3, "imap_sessions": 300, "imap_workers": 8,
        "imap_rounds": 4, "bulk": 10_000, "deploy_safety": True, "capacity_sessions": 1000,
        "capacity_hold_s": 300,
        "spread_mailboxes": 10_000, "spread_population": 100_000, "spread_messages": 1000, "spread_rounds": 4}
QUICK = {**FULL, "smtp_messages": 1000, "smtp_rounds": 2, "lookup_samples": 500, "lookup_cycles": 1, "deploy_repeat": 1,
         "imap_sessions": 100, "imap_rounds": 1, "deploy_safety": False, "capacity_sessions": 300,
         "capacity_hold_s": 60,
         "spread_mailboxes": 2000, "spread_population": 20_000, "spread_messages": 300, "spread_rounds": 2}


@dataclass
class Ctx:
    inst: object
    work: Path
    quick: bool
    cfg: dict
    figures: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    bare: BareStack | None = None
    pg: object = None

    def users(self, domain: str) -> list[str]:
        return [f"u{i}@{domain}" for i in range(self.cfg["smtp_sessions"])]


# ---------------------------------------------------------------- sections
def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


# one cycle of the lookup section's table sizes (see lookup_scaling)
LOOKUP_CYCLE = (100, 10_000, 100_000, 100_000, 10_000, 100)


def lookup_scaling(ctx: Ctx) -> dict:
    """Lookup latency at 100, 10,000 and 100,000 mailboxes, visited in the order
    LOOKUP_CYCLE (ABCCBA), `lookup_cycles` times, the samples split evenly over the visits:
    the load of the shared machine drifts within a minute, and a size measured both before
    and after the others is compared under the same drift (measured once each, minutes
    apart, a burst of load during one size decided the flatness ratio). With two cycles, a
    burst that spoils one whole visit holds a quarter of a size's blocks, not half, and no
    longer moves the median. The table grows with COPY and shrinks with DELETE + VACUUM
    FULL; it ends at 100 mailboxes, where the SMTP section expects it."""
    order = LOOKUP_CYCLE * ctx.cfg["lookup_cycles"]
    per_visit = ctx.cfg["lookup_samples"] // (2 * ctx.cfg["lookup_cycles"])
    visits: dict[int, list[dict]] = {}
    for i, size in enumerate(order):
        if size > (order[i - 1] if i else 0):
            bulk_mailboxes(ctx.inst, size, DOMAIN)
        elif size < order[i - 1]:
            shrink_mailboxes(ctx.inst, size, DOMAIN)
        visits.setdefault(size, []).append(lookups.measure(ctx.inst, size, DOMAIN, PASSWORD, per_visit, seed=11 + i))
    out = {}
    for size, measured in visits.items():
        r = lookups.summarize(measured)
        ctx.details[f"lookups_{_label(size)}"] = r
        k = _label(size)
        out.update({f"lookup_p50_ms_{k}": r["recipient"]["p50_ms"], f"lookup_p99_ms_{k}": r["recipient"]["p99_ms"],
                    f"lookup_p99_block_median_ms_{k}": r["recipient"].get("p99_block_median_ms"),
                    **{f"{kind}_p{q}_ms_{k}": r[kind][f"p{q}_ms"] for kind in ("auth", "passdb", "userdb")
                       for q in (50, 99)}})
    return out


def auth_policy_cost(ctx: Ctx) -> dict:
    """What the policy server adds to an IMAP/submission authentication (dovecot asks it
    before the authentication and reports to it after): the same authentications with the
    template parameter auth_rate_limit on and off, in ABBA order, at 100 mailboxes."""
    inst = ctx.inst
    bulk_mailboxes(inst, 100, DOMAIN)  # there already after lookup_scaling
    rng = random.Random(5)
    per_visit = ctx.cfg["lookup_samples"] // 4
    samples: dict[bool, list[float]] = {True: [], False: []}

    def deploy_with(enabled: bool) -> None:
        result = inst.app.deploys.deploy(inst.app.deploys.plan({**inst.parameters, "auth_rate_limit": enabled}))
        if result.result not in ("applied", "unchanged"):
            raise RuntimeError(f"auth_rate_limit={enabled} was not deployed: {result.result}")

    try:
        for enabled in (True, False, False, True):
            deploy_with(enabled)
            users = [f"u{rng.randrange(100)}@{DOMAIN}" for _ in range(per_visit + 20)]
            samples[enabled] += lookups.authentications(inst, users, PASSWORD)[20:]  # the first 20 warm up
    finally:
        deploy_with(inst.parameters.get("auth_rate_limit", True))
    on, off = summary_ms(samples[True]), summary_ms(samples[False])
    ctx.details["auth_policy"] = {"on": on, "off": off}
    return {"auth_policy_on_p50_ms": on["p50_ms"], "auth_policy_off_p50_ms": off["p50_ms"],
            "auth_policy_on_p99_ms": on["p99_ms"], "auth_policy_off_p99_ms": off["p99_ms"],
            "auth_policy_p50_ratio": round(on["p50_ms"] / off["p50_ms"], 3),
            "auth_policy_p99_ratio": round(on["p99_ms"] / off["p99_ms"], 3)}


def crypt_cost(ctx: Ctx) -> dict:
    """What one SHA512-CRYPT (5000 rounds) costs here: the floor of every authentication."""
    times = []
    for i in range(50):
        t0 = time.perf_counter()
        hash_password(f"{PASSWORD}-{i}")
        times.append(time.perf_counter() - t0)
    return {"crypt_p50_ms": round(statistics.median(times) * 1000, 3)}


def smtp_throughput(ctx: Ctx) -> dict:
    cfg, inst = ctx.cfg, ctx.inst
    bulk_mailboxes(inst, max(100, cfg["smtp_sessions"]), DOMAIN)  # there already after lookup_scaling
    local = [u.split("@")[0] for u in ctx.users(DOMAIN)]
    bare = start_bare(ctx)
    full_dirs = [inst.layout.mail_storage / DOMAIN / u / "Maildir" for u in local]
    bare_dirs = [bare.maildir(u) for u in local]
    args = dict(messages=cfg["smtp_messages"], size=cfg["smtp_size"])
    runs = {"full": [], "bare": [], "sink": []}
    groups = cpu_groups(ctx)
    cpu_ms = cpu.RoundCpu(groups)

    def measured(target: str, port: int, users: list[str], dirs) -> dict:
        cpu_ms.start()
        result = smtp.send_and_count(port, users, dirs, **args)
        cpu_ms.stop(target, result["delivered"])
        return result

    full = lambda: measured("full", inst.ports["smtp"], ctx.users(DOMAIN), full_dirs)  # noqa: E731
    plain = lambda: measured("bare", bare.smtp_port, ctx.users(bare.domain), bare_dirs)  # noqa: E731
    try:
        # not measured: every daemon's first messages pay for process starts, database
        # connections, compiled lookup functions, new Maildirs and empty auth caches
        for port, users, dirs in ((inst.ports["smtp"], ctx.users(DOMAIN), full_dirs),
                                  (bare.smtp_port, ctx.users(bare.domain), bare_dirs)):
            smtp.send_and_count(port, users, dirs, messages=cfg["smtp_warmup"], size=cfg["smtp_size"])
        for i in range(cfg["smtp_rounds"]):
            # a pair per round, back to back, in ABBA order: the load of the shared machine
            # changes within seconds, so each ratio compares two runs under the same load
            first, second = (("full", full), ("bare", plain)) if i % 2 == 0 else (("bare", plain), ("full", full))
            for name, run in (first, second):
                runs[name].append(run())
            runs["sink"].append(smtp.send_and_count(bare.smtp_port, ctx.users(bare.sink_domain), None,
                                                    counter=bare.sink_count, **args))
    finally:
        if groups:
            groups.close()
    # before/after of the lookup functions (docs/benchmarks.md): the same template with the
    # postfix lookups as plain view queries, aliases and lists as two tables
    before = view_lookups(inst)
    try:
        smtp.send_and_count(inst.ports["smtp"], ctx.users(DOMAIN), full_dirs, messages=cfg["smtp_warmup"],
                            size=cfg["smtp_size"])  # postfix restarted its lookups: warm them again
        for _ in range(max(1, cfg["smtp_rounds"] // 2)):
            runs.setdefault("full_view_lookups", []).append(
                smtp.send_and_count(inst.ports["smtp"], ctx.users(DOMAIN), full_dirs, **args))
            runs.setdefault("bare_view_lookups", []).append(
                smtp.send_and_count(bare.smtp_port, ctx.users(bare.domain), bare_dirs, **args))
    finally:
        inst.app.deploys.deploy(inst.app.deploys.plan(dict(inst.parameters)))
    ctx.details["smtp"] = runs
    med = {k: statistics.median(r["msgs_s"] for r in v) for k, v in runs.items()}

    def pair_ratios(a: str, b: str) -> list[float]:
        return [round(x["msgs_s"] / y["msgs_s"], 3) for x, y in zip(runs[a], runs[b])]

    rounds = pair_ratios("full", "bare")
    return {"smtp_full_msgs_s": round(med["full"], 1), "smtp_bare_msgs_s": round(med["bare"], 1),
            "smtp_sink_msgs_s": round(med["sink"], 1), "smtp_ratio": round(statistics.median(rounds), 3),
            "smtp_ratio_rounds": rounds,
            "smtp_full_vs_sink": round(med["full"] / med["sink"], 3),
            "smtp_full_view_lookups_msgs_s": round(med["full_view_lookups"], 1),
            "smtp_ratio_view_lookups": round(statistics.median(pair_ratios("full_view_lookups", "bare_view_lookups")), 3),
            "smtp_messages": cfg["smtp_messages"], "smtp_message_bytes": cfg["smtp_size"],
            "smtp_sessions": cfg["smtp_sessions"], "template_lookup_variant": before,
            **cpu_ms.figures("smtp")}


def antispam_cost(ctx: Ctx) -> dict:
    """Port 25 with rspamd (template parameter antispam) against the same node without it:
    the same messages in ABBA pairs, each pair a deploy apart. smtp-source connects from
    loopback, for which rspamd skips its network checks (SPF, DKIM, DMARC, DNS block lists):
    the cost measured is the scan itself (rules, Bayes and greylisting in Redis). rspamd asks
    a name server of the benchmark's own that answers at once (NXDOMAIN for every name), as a
    node's local resolver would: this machine's resolver does not answer, and rspamd's DNS
    timeouts would be the figure."""
    from support.dns_zone import Zone

    cfg, inst = ctx.cfg, ctx.inst
    zone = Zone()
    bulk_mailboxes(inst, max(100, cfg["smtp_sessions"]), DOMAIN)  # there already after lookup_scaling
    users = ctx.users(DOMAIN)
    dirs = [inst.layout.mail_storage / DOMAIN / u.split("@")[0] / "Maildir" for u in users]
    args = dict(messages=cfg["smtp_messages"], size=cfg["smtp_size"])
    runs: dict[bool, list[dict]] = {True: [], False: []}

    def deploy_with(enabled: bool) -> None:
        result = inst.app.deploys.deploy(inst.app.deploys.plan({**inst.parameters, "antispam": enabled,
                                                                "antispam_greylisting": False,
                                                                "antispam_dns_servers": [f"127.0.0.1:{zone.port}"]}))
        if result.result not in ("applied", "unchanged"):
            raise RuntimeError(f"antispam={enabled} was not deployed: {result.result}")
        # not measured: the first messages pay for rspamd's workers warming up
        smtp.send_and_count(inst.ports["smtp"], users, dirs, messages=cfg["smtp_warmup"], size=cfg["smtp_size"])

    try:
        for i in range(cfg["smtp_rounds"]):
            for enabled in ((True, False) if i % 2 == 0 else (False, True)):
                deploy_with(enabled)
                runs[enabled].append(smtp.send_and_count(inst.ports["smtp"], users, dirs, **args))
    finally:
        inst.app.deploys.deploy(inst.app.deploys.plan(dict(inst.parameters)))
        zone.close()
    ctx.details["antispam"] = {"on": runs[True], "off": runs[False]}
    rounds = [round(on["msgs_s"] / off["msgs_s"], 3) for on, off in zip(runs[True], runs[False], strict=True)]
    return {"smtp_antispam_on_msgs_s": round(statistics.median(r["msgs_s"] for r in runs[True]), 1),
            "smtp_antispam_off_msgs_s": round(statistics.median(r["msgs_s"] for r in runs[False]), 1),
            "smtp_ratio_antispam": round(statistics.median(rounds), 3), "smtp_ratio_antispam_rounds": rounds}


def bare_locals(ctx: Ctx) -> list[str]:
    """The bare stack's mailboxes: u0.. enough for the fixed SMTP and IMAP sections and for the
    spread workload."""
    return [f"u{i}" for i in range(max(ctx.cfg["smtp_sessions"], ctx.cfg["spread_mailboxes"]))]


def start_bare(ctx: Ctx) -> BareStack:
    if ctx.bare is None:
        ctx.bare = bare_stack(ctx.inst, ctx.work, bare_locals(ctx))
        ctx.bare.start()  # ctx.bare is set first: main() stops whatever start() got running
    return ctx.bare


def smtp_spread(ctx: Ctx) -> dict:
    """SMTP to a fresh random draw of many mailboxes in many domains each round, mailboxes
    changing meanwhile (the lookup cache misses), full against bare in ABBA pairs
    (benchmarks/spread.py)."""
    bare = start_bare(ctx)
    return spread.section(ctx, bare, bare_locals(ctx), cpu_groups(ctx))


def bare_stack(inst, work: Path, local: list[str]) -> BareStack:
    """The bare baseline (not started yet) for the mailboxes `local`@bare.test, with the node's
    certificate."""
    return BareStack(work / "bare", local, hash_password(PASSWORD),
                     inst.layout.current / "tls" / "mail.crt", inst.layout.current / "tls" / "mail.key")


def full_path_pids(inst, pg) -> dict[str, int]:
    """The main process of each running component of the node, and PostgreSQL's postmaster."""
    pids = {name: inst.app.backend.pid(name) for name in inst.app.adapters}
    pids["postgres"] = int((pg.data / "postmaster.pid").read_text().split()[0])
    return {name: pid for name, pid in pids.items() if pid}


def cpu_groups(ctx: Ctx):
    """CPU accounting of the full path (each component, and PostgreSQL) and of the bare stack."""
    groups = cpu.CpuGroups("rupost-bench")
    if not groups.available:
        return None
    for name, pid in full_path_pids(ctx.inst, ctx.pg).items():
        groups.add(f"full-{name}", [pid])
    groups.add("bare-postfix", [ctx.bare.pid("postfix")])
    groups.add("bare-dovecot", [ctx.bare.pid("dovecot")])
    return groups


VIEW_LOOKUPS = {
    "domains": "SELECT CASE WHEN EXISTS (SELECT 1 FROM lookup_domains WHERE name = '%s') THEN 'yes' ELSE 'no' END",
    "mailboxes": "SELECT 1 FROM lookup_mailboxes WHERE address = '%s'",
    "aliases": "SELECT destinations FROM lookup_aliases WHERE address = '%u@%d'",
    "lists": "SELECT members FROM lookup_lists WHERE address = '%u@%d'",
}


def view_lookups(inst) -> str:
    """Deploy the active template with the postfix lookups as view queries (as shipped before
    data migration 0004_data_lookup_functions): aliases and lists as two tables."""
    import yaml

    from rupost.templating import load_document

    app = inst.app
    data = yaml.safe_load(app.templates.show("standard")["body"])
    postfix = data["components"]["postfix"]
    # the queries change; a lookup the template caches stays cached (the files that name its
    # memcache table are the same)
    for name, query in VIEW_LOOKUPS.items():
        postfix["lookups"][name] = {**postfix["lookups"].get(name, {}), "query": query}
    config_dir = "{{ paths.config.postfix }}"
    postfix["main"]["virtual_alias_maps"] = (f"proxy:pgsql:{config_dir}/pgsql-aliases.cf, "
                                             f"proxy:pgsql:{config_dir}/pgsql-lists.cf")
    document = load_document(yaml.safe_dump(data, sort_keys=False), "bench-view-lookups")
    result = app.deploys.deploy(app.deploys.plan(dict(inst.parameters), document=document))
    if result.result != "applied":
        raise RuntimeError(f"the view-lookups variant was not applied: {result.result}")
    return "view queries, aliases + lists as two tables"


def imap_sessions(ctx: Ctx) -> dict:
    cfg = ctx.cfg
    users = [(u, PASSWORD) for u in ctx.users(DOMAIN)]
    bare_users = [(u, PASSWORD) for u in ctx.users(start_bare(ctx).domain)]
    r = imap.measure(ctx.inst, users, ctx.bare, bare_users, cfg["imap_sessions"], cfg["imap_workers"],
                     cfg["imap_rounds"], ctx.work)
    ctx.details["imap"] = r
    ctx.bare.stop()
    return {"imap_full_sessions_s": r["full"]["sessions_s"], "imap_direct_tls_sessions_s": r["direct_tls"]["sessions_s"],
            "imap_direct_plain_sessions_s": r["direct_plain"]["sessions_s"],
            "imap_bare_tls_sessions_s": r["bare_tls"]["sessions_s"],
            "imap_full_p50_ms": r["full"]["p50_ms"], "imap_direct_tls_p50_ms": r["direct_tls"]["p50_ms"],
            "imap_ratio": r["pair_ratios"]["direct_tls"]["median"],
            "imap_ratio_vs_plain": r["pair_ratios"]["direct_plain"]["median"],
            "imap_sessions": cfg["imap_sessions"], "imap_workers": cfg["imap_workers"]}


def held_imap_sessions(ctx: Ctx) -> dict:
    """N mailboxes each holding one IMAPS session (LOGIN, SELECT, IDLE) through port 993: how
    many are established, and the node's memory per held session (benchmarks/capacity.py)."""
    return capacity.section(ctx, PASSWORD)


def deploy_at(size: int):
    def section(ctx: Ctx) -> dict:
        r = deploy.measure(ctx.inst, size, ctx.cfg["deploy_repeat"])
        ctx.details[f"deploy_{_label(size)}"] = r
        return {f"deploy_s_{_label(size)}": round(r["full_s"], 3),
                f"redeploy_nochange_s_{_label(size)}": round(r["no_change_s"], 3)}
    section.__name__ = f"deploy_{_label(size)}"
    return section


def deploy_safety(ctx: Ctx) -> dict:
    if not ctx.cfg["deploy_safety"]:
        return {}
    r = deploy.measure_safety(ctx.inst, ctx.cfg["deploy_repeat"])
    ctx.details["deploy_safety"] = r
    return {"plan_s": round(r["plan_s"], 3), "changed_deploy_s": round(r["changed_deploy_s"], 3),
            "auto_rollback_deploy_s": round(r["auto_rollback_deploy_s"], 3),
            "manual_rollback_s": round(r["manual_rollback_s"], 3),
            "deploy_reload_traffic_sent": r["reload_only"]["sent"],
            "deploy_reload_refusals": r["reload_only"]["refused"],
            "deploy_reload_traffic_lost": r["reload_only"]["sent"] - r["reload_only"]["delivered"],
            "deploy_traffic_sent": r["with_rollback"]["sent"],
            "deploy_traffic_refusals": r["with_rollback"]["refused"],
            "deploy_traffic_lost": r["with_rollback"]["sent"] - r["with_rollback"]["delivered"]}


def bulk_import(ctx: Ctx) -> dict:
    r = bulk.measure(ctx.inst, ctx.cfg["bulk"], ctx.work)
    ctx.details["bulk"] = r
    crypt_ms = ctx.figures.get("crypt_p50_ms")
    floor = {"bulk_hash_floor_s": round(crypt_ms * r["mailboxes"] / 1000 / (os.cpu_count() or 1), 1)} if crypt_ms else {}
    return {**floor, "bulk_create_10k_s": r["seconds"], "bulk_create_per_s": r["per_s"],
            "bulk_daemon_reloads": r["daemon_reloads"] + r["daemon_restarts"]}


# Later issues add their sections here (cluster: failover/evacuation; directory: updater,
# LDAP lookups; panel: list latency) and their targets to TARGETS; see docs/benchmarks.md.
SECTIONS = [crypt_cost, lookup_scaling, auth_policy_cost, smtp_throughput, antispam_cost, antivirus_cost, smtp_spread,
            imap_sessions,
            held_imap_sessions,
            deploy_at(100), deploy_at(100_000), deploy_safety, bulk_import]

# figure -> (comparison, bound, what the issue asks)
TARGETS = {
    "smtp_ratio": (">=", 0.8, "RuPost SMTP >= 0.8 of bare"),
    "smtp_ratio_spread": (">=", 0.8, "RuPost SMTP to spread recipients >= 0.8 of bare"),
    "smtp_ratio_antispam": (">=", 0.6, "port 25 with rspamd >= 0.6 of the filter-free path"),
    "lookup_p99_ms_100": ("<=", 5, "recipient lookup p99 <= 5 ms"),
    "lookup_p99_ms_10k": ("<=", 5, "recipient lookup p99 <= 5 ms"),
    "lookup_p99_ms_100k": ("<=", 5, "recipient lookup p99 <= 5 ms"),
    "lookup_flat_ratio": ("<=", 1.5, "lookup p99 100k within 1.5x of 100"),
    "auth_flat_ratio": ("<=", 1.5, "auth p99 100k within 1.5x of 100"),
    "passdb_p99_ms_100": ("<=", 5, "auth (passdb) lookup p99 <= 5 ms"),
    "passdb_p99_ms_10k": ("<=", 5, "auth (passdb) lookup p99 <= 5 ms"),
    "passdb_p99_ms_100k": ("<=", 5, "auth (passdb) lookup p99 <= 5 ms"),
    "passdb_flat_ratio": ("<=", 1.5, "passdb p99 100k within 1.5x of 100"),
    "deploy_s_100": ("<=", 10, "full deploy <= 10 s"),
    "deploy_reload_refusals": ("<=", 0, "a reload-only deploy refuses no connection"),
    "capacity_failed": ("<=", 0, "every held IMAPS session within max_imap_sessions is established"),
    "deploy_s_100k": ("<=", 10, "full deploy <= 10 s"),
    "deploy_ratio_100k_vs_100": ("<=", 1.2, "deploy independent of mailboxes (1.2x)"),
    "bulk_create_10k_s": ("<=", 60, "10,000 mailboxes <= 60 s"),
    "bulk_daemon_reloads": ("<=", 0, "zero daemon reloads"),
    "imap_ratio": (">=", 0.8, "IMAPS via HAProxy+nginx >= 0.8 of direct TLS"),
}


def derived(f: dict) -> dict:
    out = {}
    if "lookup_p99_ms_100" in f and "lookup_p99_ms_100k" in f:
        out["lookup_flat_ratio"] = round(f["lookup_p99_ms_100k"] / f["lookup_p99_ms_100"], 3)
        out["auth_flat_ratio"] = round(f["auth_p99_ms_100k"] / f["auth_p99_ms_100"], 3)
        out["passdb_flat_ratio"] = round(f["passdb_p99_ms_100k"] / f["passdb_p99_ms_100"], 3)
    if "deploy_s_100" in f and "deploy_s_100k" in f:
        out["deploy_ratio_100k_vs_100"] = round(f["deploy_s_100k"] / f["deploy_s_100"], 3)
        out["redeploy_ratio_100k_vs_100"] = round(f["redeploy_nochange_s_100k"] / f["redeploy_nochange_s_100"], 3)
    return out


def verdicts(f: dict) -> dict:
    out = {}
    for key, (op, bound, text) in TARGETS.items():
        if key in f:
            ok = f[key] >= bound if op == ">=" else f[key] <= bound
            out[key] = {"target": f"{op} {bound}", "met": ok, "what": text}
    return out


def print_table(f: dict, v: dict, section_s: dict) -> None:
    print()
    print(f"{'figure':<32} {'value':>12}  {'target':>8}  verdict")
    print("-" * 68)
    for key, value in f.items():
        if key in ("targets", "details", "machine", "section_seconds") or isinstance(value, (dict, str)):
            continue
        t = v.get(key)
        mark = "" if t is None else ("met" if t["met"] else "MISSED")
        print(f"{key:<32} {value!s:>12}  {t['target'] if t else '':>8}  {mark}")
    print("-" * 68)
    for key, value in f.items():
        if isinstance(value, dict) and key not in ("targets", "details", "machine", "section_seconds"):
            print(f"{key}: " + ", ".join(f"{k} {x}" for k, x in value.items()))
    print("section seconds: " + ", ".join(f"{k} {s:.0f}" for k, s in section_s.items()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description="RuPost benchmark suite: full path vs "
                                     "a bare baseline measured side by side in the same run.")
    parser.add_argument("--quick", action="store_true", help="smaller counts and one round (under 5 minutes)")
    parser.add_argument("--json", type=Path, help="write the figures here as one JSON object")
    parser.add_argument("--capacity-sessions", type=int, metavar="N",
                        help="held IMAPS sessions of held_imap_sessions (default 1,000; --quick 300); the node is "
                             "sized for them")
    parser.add_argument("--capacity-per-process", type=int, default=1, metavar="K",
                        help="imap_sessions_per_process for held_imap_sessions (default 1)")
    parser.add_argument("--capacity-hibernate", type=int, default=0, metavar="S",
                        help="imap_hibernate_after for held_imap_sessions: IDLE sessions move to dovecot's "
                             "imap-hibernate after S seconds (default 0: never)")
    parser.add_argument("--capacity-hold", type=int, metavar="S",
                        help="seconds the sessions stay held before the memory is measured again "
                             "(default 300; --quick 60)")
    parser.add_argument("--kernel-limits", action="store_true",
                        help="raise the kernel's inotify limits to the package's systemd/sysctl.d/60-rupost.conf "
                             "for the run (never lowered; put back afterwards)")
    names = [section.__name__ for section in SECTIONS]
    parser.add_argument("--only", type=lambda v: v.split(","), metavar="SECTION[,SECTION]",
                        help=f"run only these sections, in the suite's order ({', '.join(names)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"no section named {', '.join(unknown)} (sections: {', '.join(names)})")
    sections = [s for s in SECTIONS if not args.only or s.__name__ in args.only]
    cfg = dict(QUICK if args.quick else FULL)
    if args.capacity_sessions:
        cfg["capacity_sessions"] = args.capacity_sessions
    cfg["capacity_per_process"] = args.capacity_per_process
    cfg["capacity_hibernate"] = args.capacity_hibernate
    if args.capacity_hold is not None:
        cfg["capacity_hold_s"] = args.capacity_hold
    with contextlib.ExitStack() as stack:
        if args.kernel_limits:
            stack.enter_context(capacity.PackageKernelLimits(
                Path(__file__).resolve().parents[1] / "systemd" / "sysctl.d" / "60-rupost.conf"))
        return run(args, sections, cfg)


def run(args, sections: list, cfg: dict) -> dict:
    # the node's daemons inherit this process's open-file limit; this process holds a socket
    # per held session
    from rupost.templating.limits import derive_limits

    wanted = derive_limits(capacity.load(cfg)).open_files
    cfg["capacity_open_files"] = capacity.raise_open_files(max(wanted, cfg["capacity_sessions"]) + 1024)[1]
    capacity.load(cfg)  # a load this machine cannot carry stops the run here, before the node starts
    # a SIGTERM unwinds like Ctrl-C: the node, PostgreSQL and the bare stack are stopped
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rpbs", dir="/tmp"))
    os.chmod(work, 0o755)
    figures: dict = {}
    section_s: dict = {}
    ctx = None
    try:
        with node_instance("suite") as (inst, _pg):
            t0 = time.perf_counter()
            inst.deploy()
            section_s["node"] = time.perf_counter() - t0
            ctx = Ctx(inst, work, args.quick, cfg, pg=_pg)
            for section in sections:
                t0 = time.perf_counter()
                print(f"[{time.perf_counter() - started:6.0f} s] {section.__name__} ...", flush=True)
                figures.update(section(ctx))
                ctx.figures = figures
                section_s[section.__name__] = time.perf_counter() - t0
    finally:
        if ctx is not None and ctx.bare is not None:
            ctx.bare.stop()
        shutil.rmtree(work, ignore_errors=True)
    figures.update(derived(figures))
    v = verdicts(figures)
    figures["quick"] = args.quick
    figures["total_s"] = round(time.perf_counter() - started, 1)
    figures["machine"] = {"cpus": os.cpu_count(), "load_avg_end": os.getloadavg(), "python": platform.python_version()}
    figures["targets"] = v
    figures["details"] = ctx.details if ctx else {}
    figures["section_seconds"] = {k: round(s, 1) for k, s in section_s.items()}
    print_table(figures, v, section_s)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
