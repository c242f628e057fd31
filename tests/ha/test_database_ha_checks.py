"""`rupost check` on a highly available database in trouble (issue 32): no primary at all, and a
replica further behind than the threshold. Each check must fail naming the problem while it
lasts and pass again once the cluster has recovered. Same Patroni cluster and nodes as
test_database_ha.py (tests/ha/conftest.py); run under `flock /tmp/rupost-netns.lock`."""
from __future__ import annotations

import json
import os
import signal

from support.cluster import wait_until


def check(node) -> tuple[int, dict]:
    """Exit code, and target -> (status, detail) of `rupost check --only database-ha`."""
    done = node.rupost("check", "--only", "database-ha", "--no-record", "--json", check=False)
    out = json.loads(done.stdout)
    return done.returncode, {r["target"]: (r["status"], r["detail"]) for r in out["results"]}


def all_ok(node) -> bool:
    code, results = check(node)
    return code == 0 and {s for s, _ in results.values()} == {"ok"}


def test_no_primary_fails_the_check_and_it_passes_again(ha_cluster, patroni):
    """Patroni paused (it neither restarts nor replaces a primary), the leader's PostgreSQL
    killed: no member is the primary. The check is critical and says so, on every node; once
    Patroni resumes (it starts the leader again), the check passes."""
    node = ha_cluster.nodes[0]
    assert wait_until(lambda: all_ok(node), 60), check(node)
    leader = patroni.leader()
    patroni.patronictl("pause", "--wait")
    try:
        patroni.kill_postgres(leader)
        failing = wait_until(lambda: (lambda c: c if c[0] != 0 and c[1]["primary"][0] == "critical" else None)(
            check(node)), 60)
        assert failing, check(node)
        code, results = failing
        assert code == 1, code  # critical
        assert "no member is the primary" in results["primary"][1], results
        assert leader.name in results["primary"][1], results  # the summary names the members' states
        # the other node sees the same
        _, other = check(ha_cluster.nodes[1])
        assert other["primary"][0] == "critical", other
    finally:
        patroni.patronictl("resume", "--wait")
    patroni.wait_healthy(180)
    assert wait_until(lambda: all_ok(node), 90), check(node)


def walreceiver_pid(member) -> int:
    """The WAL receiver of a replica (a child of its postmaster)."""
    postmaster = member.postmaster_pid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster and b"walreceiver" in cmdline:
            return int(entry)
    raise AssertionError(f"{member.name}: no WAL receiver running")


def test_a_lagging_replica_warns_naming_it_and_clears(ha_cluster, patroni):
    """The asynchronous replica's WAL receiver frozen (SIGSTOP) while the primary writes a few
    MB: the replica falls behind by more than the threshold (a cluster setting, lowered to
    1 MB here); the check warns naming it and the lag. Thawed, it catches up and the check
    passes again."""
    node = ha_cluster.nodes[1]
    app = ha_cluster.nodes[0].app
    leader, sync = patroni.leader(), patroni.sync_standby()
    replica = next(m for m in patroni.members if m not in (leader, sync))
    app.settings.set("monitor_database_lag_bytes", 1024 * 1024)
    pid = walreceiver_pid(replica)
    os.kill(pid, signal.SIGSTOP)
    try:
        patroni.psql("CREATE TABLE lag_probe AS SELECT repeat('x', 1000) AS filler FROM generate_series(1, 6000)")
        lagging = wait_until(lambda: (lambda c: c if c[1].get(replica.name, ("",))[0] == "warning" else None)(
            check(node)), 60)
        assert lagging, check(node)
        code, results = lagging
        status, detail = results[replica.name]
        assert code == 2 and "bytes behind the primary" in detail and replica.address in detail, results
        assert results["primary"][0] == "ok", results  # writes go on: it is only a lookup spare
    finally:
        os.kill(pid, signal.SIGCONT)
        patroni.psql("DROP TABLE IF EXISTS lag_probe")
        app.settings.set("monitor_database_lag_bytes", 16 * 1024 * 1024)
    assert wait_until(lambda: all_ok(node), 90), check(node)
