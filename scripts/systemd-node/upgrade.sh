#!/bin/bash
# Upgrade under systemd: the previous release (/root/debs/, built from its git tag by
# scripts/test-systemd-node) installed, configured and serving mail, then upgraded to this tree's
# .deb, whose schema migration first fails (a conflicting column made by hand: postinst stops, the
# old configuration keeps serving, the message says why), then succeeds after the fix with
# `dpkg --configure -a`: rupost db upgrade and a deploy by the maintainer scripts, mail flowing.
source /root/scenarios/lib.sh
new="$1"
old=$(ls /root/debs/rupost_*.deb)
setup_node "$old"
old_version=$(dpkg-query -W -f='${Version}' rupost)
systemctl start rupost.service  # the old wizard does not start the agent
wait_until 60 grep -q "node in_service" /var/log/rupost/monitor.log || fail "old agent not in service"
ok "previous release $old_version installed, deployed and serving"
psql_main() { runuser -u postgres -- psql -X -tA -d rupost -c "$1"; }

echo "--- upgrade whose migration fails: a column of the new schema already exists with another type"
psql_main "ALTER TABLE nodes ADD COLUMN software_version integer" >/dev/null
agent_pid=$(systemctl show -p MainPID --value rupost.service)
pids_before=$(for c in $COMPONENTS; do mainpid "$c"; done | tr '\n' ' ')
load_start failedupgrade
set +e; apt-get install -y -q --no-install-recommends "$new" > /tmp/apt-upgrade-fail.log 2>&1; rc=$?; set -e
deliver during-failed-upgrade-2
load_stop failedupgrade
no_refusals failedupgrade
[ "$rc" != 0 ] || fail "the upgrade succeeded over a conflicting schema: $(cat /tmp/apt-upgrade-fail.log)"
grep -q "'rupost db upgrade' failed" /tmp/apt-upgrade-fail.log || fail "postinst did not say why: $(tail -20 /tmp/apt-upgrade-fail.log)"
grep -q "software_version" /tmp/apt-upgrade-fail.log || fail "the database error is not shown: $(tail -20 /tmp/apt-upgrade-fail.log)"
[ "$(for c in $COMPONENTS; do mainpid "$c"; done | tr '\n' ' ')" = "$pids_before" ] || fail "components restarted by a failed upgrade"
[ "$(systemctl show -p MainPID --value rupost.service)" = "$agent_pid" ] || fail "agent restarted by a failed upgrade"
# the new release's code is unpacked, its deploy not done: its new components are reported, not started
rupost check > /tmp/check-half-configured.txt 2>&1 || true
grep -q "lookup_cache is not in the live generation" /tmp/check-half-configured.txt \
  || fail "rupost check does not name the components the deploy has still to add: $(cat /tmp/check-half-configured.txt)"
ok "failed migration: postinst stopped ($(dpkg-query -W -f='${Status}' rupost)), said: $(grep -o "'rupost db upgrade' failed[^:]*" /tmp/apt-upgrade-fail.log | head -1); mail kept flowing (0 refused, 0 lost)"
phase failed-upgrade

echo "--- fixed, dpkg --configure -a: db upgrade, deploy, agent restarted, mail flowing"
psql_main "ALTER TABLE nodes DROP COLUMN software_version" >/dev/null
monitor_lines=$(wc -l < /var/log/rupost/monitor.log)
load_start upgrade
dpkg --configure -a > /tmp/dpkg-configure.log 2>&1 || fail "dpkg --configure -a: $(cat /tmp/dpkg-configure.log)"
deliver after-upgrade-3
load_stop upgrade
# the upgrade's deploy adds components and changes files a reload cannot apply (a restart): a
# connection open in that window may be closed (MEASURE counts them; clients retry); none is
# refused and nothing is lost
no_refusals upgrade "refused imap_refused"
# the agent restarted on the new code before the deploy rendered the components this release
# adds: it must not take them for crashed ones (no configuration to start them with yet)
since_upgrade=$(tail -n +"$((monitor_lines + 1))" /var/log/rupost/monitor.log)
if grep -E " down: restarting it| out_of_service:" <<< "$since_upgrade"; then
  fail "the agent saw components down during the upgrade: $since_upgrade"
fi
new_version=$(dpkg-query -W -f='${Version}' rupost)
[ "$new_version" != "$old_version" ] && [ "$(dpkg-query -W -f='${Status}' rupost)" = "install ok installed" ] \
  || fail "rupost $new_version $(dpkg-query -W -f='${Status}' rupost)"
grep -q "databases are at the latest schema" /tmp/dpkg-configure.log || fail "no db upgrade: $(cat /tmp/dpkg-configure.log)"
grep -qE "generation [0-9]+ is live|no changes: generation" /tmp/dpkg-configure.log || fail "no deploy: $(cat /tmp/dpkg-configure.log)"
[ "$(systemctl show -p MainPID --value rupost.service)" != "$agent_pid" ] || fail "agent not restarted on the new code"
wait_until 60 sh -c "rupost nodes list --json | grep -q '\"software_version\": \"$new_version\"'" \
  || fail "the agent does not report $new_version: $(rupost nodes list --json)"
[ "$(rupost db status --json | $PY -c 'import json,sys; d = json.load(sys.stdin); print(all(r["up_to_date"] for r in (d["databases"] if isinstance(d, dict) else d)))')" = True ] \
  || fail "schema not up to date: $(rupost db status)"
# the units this release adds to the distribution's it takes over (rspamd, redis-server) are
# masked by the upgrade too, not only on a first install
distribution_units_masked
ok "the upgrade took over the distribution's units the new release adds: $(taken_over_units)"
ok "upgraded $old_version -> $new_version: schema migrated, deployed ($(grep -oE "generation [0-9]+ is live|no changes: generation [0-9]+ is live" /tmp/dpkg-configure.log | head -1)), agent reports $new_version"
phase upgrade
echo "UPGRADE-PASS"
