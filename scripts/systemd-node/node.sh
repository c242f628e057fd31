#!/bin/bash
# The node under systemd: install, configure, deploy, mail; then the scenarios of issue 27
# (docs/packaging.md, "The systemd node test"). Run inside the booted root by scripts/test-systemd-node.
source /root/scenarios/lib.sh
deb="$1"

setup_node "$deb"

echo "--- units: every shipped unit active or waiting as designed; systemd-analyze verify"
wait_until 30 systemctl is-active --quiet rupost.service || fail "rupost.service: $(systemctl is-active rupost.service)"
systemctl is-active --quiet rupost-scheduler.service || fail "rupost-scheduler.service not active"
all_components_active || fail "components: $(units_of_components)"
for timer in rupost-mailqueue-evacuator.timer rupost-distribution-lists-updater.timer; do
  [ "$(systemctl show -p SubState --value "$timer")" = waiting ] || fail "$timer not waiting"
  systemctl list-timers --all --no-legend | grep -q "$timer" || fail "$timer not in list-timers"
done
wait_until 60 grep -q "node in_service" /var/log/rupost/monitor.log || fail "agent: $(tail -3 /var/log/rupost/monitor.log)"
# --man=no: the root has no man-db; every unit names man:rupost(1)
systemd-analyze verify --man=no /lib/systemd/system/rupost*.service /lib/systemd/system/rupost*.timer \
  rupost-component@postfix.service rupost-component@sogo.service > /tmp/verify.log 2>&1 \
  || fail "systemd-analyze verify: $(cat /tmp/verify.log)"
[ ! -s /tmp/verify.log ] || fail "systemd-analyze verify: $(cat /tmp/verify.log)"
ok "rupost, rupost-scheduler and 9 components active, 2 timers waiting, agent in_service, verify clean"
phase units

echo "--- deploy with reload (SystemdBackend: systemctl reload), under mail load"
before_postfix=$(mainpid postfix) before_reloads=$(journalctl -q -u rupost-component@postfix.service | grep -c "Reloading" || true)
load_start reload
rupost template set message_size_limit=41943040 >/dev/null
rupost deploy --json > /tmp/deploy-reload.json || fail "reload deploy: $(cat /tmp/deploy-reload.json)"
rupost template set message_size_limit=52428800 >/dev/null
rupost deploy --json > /tmp/deploy-back.json || fail "deploy back: $(cat /tmp/deploy-back.json)"
load_stop reload
no_refusals reload
[ "$(json_field /tmp/deploy-reload.json started)" = "[]" ] || fail "a reload-only deploy started $(json_field /tmp/deploy-reload.json started)"
json_field /tmp/deploy-reload.json reloaded | grep -q postfix || fail "postfix not reloaded"
[ "$(mainpid postfix)" = "$before_postfix" ] || fail "postfix restarted by a reload"
after_reloads=$(journalctl -q -u rupost-component@postfix.service | grep -c "Reloading" || true)
[ "$after_reloads" -ge $((before_reloads + 2)) ] || fail "systemd saw $((after_reloads - before_reloads)) reloads of postfix"
ok "reload-only deploys: reloaded $(json_field /tmp/deploy-reload.json reloaded) through systemctl reload, 0 refused, 0 lost"
phase deploy-reload

echo "--- deploy with restart (sogo_workers: systemctl restart sogo), under mail load"
before_sogo=$(mainpid sogo) before_dovecot=$(mainpid dovecot)
load_start restart
rupost template set sogo_workers=4 >/dev/null
rupost deploy --json > /tmp/deploy-restart.json || fail "restart deploy: $(cat /tmp/deploy-restart.json)"
load_stop restart
no_refusals restart
[ "$(mainpid sogo)" != "$before_sogo" ] || fail "sogo not restarted"
[ "$(mainpid dovecot)" = "$before_dovecot" ] || fail "dovecot restarted by a sogo change"
grep -q "out_of_service" <(sed -n '/sogo_workers/,$p' /var/log/rupost/monitor.log) && fail "agent took the node out during the deploy"
rupost template set sogo_workers=3 >/dev/null
rupost deploy > /dev/null || fail "deploy back to 3 sogo workers"
ok "restart deploy: sogo restarted (pid $before_sogo -> $(mainpid sogo)), mail untouched: 0 refused, 0 lost"
phase deploy-restart

echo "--- a deploy whose probe fails rolls back (nginx's IMAPS proxy pointed at a closed port)"
rupost template export standard | $PY -c '
import sys, yaml
doc = yaml.safe_load(sys.stdin)
doc["metadata"].update(name="broken", version="1.0.0")
doc["metadata"].pop("builtin", None)
doc["components"]["nginx"]["mail_proxies"][0]["upstream"] = "127.0.0.1:9"
yaml.safe_dump(doc, sys.stdout, sort_keys=False)' > /tmp/broken.yaml
rupost template import /tmp/broken.yaml >/dev/null
rupost template activate broken@1.0.0 >/dev/null
generation_before=$(readlink /var/lib/rupost/current)
load_start rollback
set +e; rupost deploy > /tmp/deploy-broken.log 2>&1; rc=$?; set -e
load_stop rollback
[ "$rc" != 0 ] || fail "the broken deploy succeeded: $(cat /tmp/deploy-broken.log)"
grep -q "probe failed: imaps" /tmp/deploy-broken.log && grep -q "rolled back to generation" /tmp/deploy-broken.log \
  || fail "broken deploy: $(cat /tmp/deploy-broken.log)"
[ "$(readlink /var/lib/rupost/current)" = "$generation_before" ] || fail "current generation changed"
[ "$(figure rollback refused)" = 0 ] && [ "$(figure rollback failed)" = 0 ] || fail "SMTP refused during the rollback: $(cat /tmp/load-rollback.json)"
rupost template activate standard@1.0.0 >/dev/null
all_components_active || fail "after the rollback: $(units_of_components)"
deliver after-rollback-2
ok "probe failure rolled back through systemd ($(grep -o 'rolled back to generation [0-9]*' /tmp/deploy-broken.log)); SMTP 0 refused, 0 lost"
phase deploy-rollback

echo "--- a component's main process killed: the agent restarts it through systemd, mail resumes"
load_start kill
victim=$(mainpid dovecot)
lines=$(wc -l < /var/log/rupost/monitor.log)
t_kill=$(now)
kill -KILL "$victim"
back() { systemctl is-active --quiet rupost-component@dovecot.service && [ "$(mainpid dovecot)" != "$victim" ] \
  && tail -n +"$((lines + 1))" /var/log/rupost/monitor.log | grep -q "node in_service"; }
wait_until 180 back || fail "dovecot not back after 180 s: $(tail -3 /var/log/rupost/monitor.log)"
t_back=$(now)
tail -n +"$((lines + 1))" /var/log/rupost/monitor.log | grep -q "out_of_service: down: dovecot" \
  || fail "the agent did not report dovecot down: $(tail -3 /var/log/rupost/monitor.log)"
deliver after-kill-3
# a message in the middle of its LMTP delivery when dovecot died may be delivered twice (its
# confirmation was lost): at least once, as SMTP promises; the figure is printed
load_stop kill duplicates-ok
measure "restart after SIGKILL of dovecot's master: $(elapsed "$t_kill" "$t_back") s to the agent's in_service (hold-down 30 s + start + probes)"
ok "dovecot killed -> node out_of_service -> restarted by the agent through systemctl -> in_service, 0 lost"
phase kill-restart

echo "--- systemctl restart rupost: mail keeps flowing"
pids_before=$(for c in $COMPONENTS; do mainpid "$c"; done | tr '\n' ' ')
load_start agentrestart
systemctl restart rupost.service
wait_until 60 systemctl is-active --quiet rupost.service || fail "rupost.service not back"
sleep 2
load_stop agentrestart
no_refusals agentrestart
[ "$(for c in $COMPONENTS; do mainpid "$c"; done | tr '\n' ' ')" = "$pids_before" ] || fail "components restarted with the agent"
ok "agent restarted; components kept their processes; 0 refused, 0 lost"

echo "--- systemctl stop rupost: stops the agent and its children (panel), not the mail components"
systemctl stop rupost.service
systemctl is-active --quiet rupost.service && fail "rupost.service still active"
ss -ltn | grep -q ':5000 ' && fail "the panel (port 5000) still listens after stop"
all_components_active || fail "components stopped with the agent: $(units_of_components)"
deliver agent-stopped-4
systemctl start rupost.service
wait_until 60 sh -c 'ss -ltn | grep -q ":5000 "' || fail "panel not back"
ok "agent and panel stopped, mail components and mail untouched; started again"
phase agent

echo "--- the timers' services run and log to the journal"
for svc in rupost-mailqueue-evacuator.service rupost-distribution-lists-updater.service; do
  systemctl start "$svc" || fail "$svc: $(journalctl -q -u "$svc" -n 5 --no-pager)"
  [ "$(systemctl show -p Result --value "$svc")" = success ] || fail "$svc result"
  # the job's own output (not systemd's Starting/Finished lines)
  line=$(journalctl -q -u "$svc" -n 1 --no-pager -o cat SYSLOG_IDENTIFIER=rupost)
  [ -n "$line" ] || fail "$svc logged nothing to the journal"
  ok "$svc: success; journal: $line"
done
phase timers

echo "--- logrotate: every daemon reopens its log"
for f in postfix.log dovecot.log nginx-access.log; do [ -s "/var/log/rupost/$f" ] || fail "$f empty"; done
logrotate -f /etc/logrotate.d/rupost || fail "logrotate"
[ -s /var/log/rupost/postfix.log.1 ] && [ -s /var/log/rupost/dovecot.log.1 ] || fail "not rotated: $(ls /var/log/rupost)"
deliver after-rotation-5
wait_until 30 grep -q "$box" /var/log/rupost/postfix.log || fail "postfix.log got no line after rotation"
wait_until 30 grep -q "$box" /var/log/rupost/dovecot.log || fail "dovecot.log got no line after rotation"
# a file descriptor of any process on a rotated file is a write into it
held=$(for p in /proc/[0-9]*; do
  for fd in "$p"/fd/*; do
    t=$(readlink "$fd" 2>/dev/null) || continue
    case "$t" in /var/log/rupost/*.log.1) echo "$(cat "$p/comm" 2>/dev/null)[${p#/proc/}] fd ${fd##*/} -> $t" ;; esac
  done
done | sort -u)
[ -z "$held" ] || fail "rotated files still open for writing: $held"
ok "rotated; new lines in the new postfix.log and dovecot.log; no process holds a rotated file"
phase logrotate

echo "--- apt-get remove: units stopped and gone, mail, queue, databases and configuration kept"
databases() { runuser -u postgres -- psql -X -tA -c "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'rupost%'"; }
apt-get remove -y -q rupost > /tmp/apt-remove.log 2>&1 || { cat /tmp/apt-remove.log; fail "apt-get remove"; }
left=$(systemctl list-units --no-legend --plain --state=active 'rupost*' | awk '{print $1}' | tr '\n' ' ')
[ -z "$left" ] || fail "units active after remove: $left"
[ ! -e /lib/systemd/system/rupost.service ] || fail "unit files left"
ss -ltn | grep -qE ':(25|993|443|5000) ' && fail "ports still open after remove: $(ss -ltn)"
has_token first-message-1 >/dev/null && has_token after-rotation-5 >/dev/null || fail "mail lost on remove"
[ -d /var/spool/rupost ] || fail "queue directory removed"
[ "$(databases)" = "rupost,rupost_data,rupost_logs" ] || fail "databases after remove: $(databases)"
[ -f /etc/rupost/config.json ] || fail "config.json removed by remove"
[ "$(systemctl is-enabled postfix.service 2>/dev/null || true)" = masked ] || fail "distribution postfix unmasked by remove"
ok "removed: no rupost unit active, ports closed; mail, queue, databases, config kept"

echo "--- reinstall: the same node resumes"
install_deb "$deb" /tmp/apt-reinstall.log
wizard > /tmp/wizard2.log 2>&1 || { cat /tmp/wizard2.log; fail "wizard after reinstall"; }
rupost mailboxes list --json | grep -q "\"$box\"" || fail "mailbox not listed after reinstall"
rupost deploy > /tmp/deploy2.log 2>&1 || { cat /tmp/deploy2.log; fail "deploy after reinstall"; }
wait_until 60 systemctl is-active --quiet rupost.service || fail "agent not running after reinstall"
deliver after-reinstall-6
ok "reinstalled: same mailbox, agent running, mail delivered"

echo "--- apt-get purge: configuration and logs removed, the rest kept and named"
apt-get purge -y -q rupost > /tmp/apt-purge.log 2>&1 || { cat /tmp/apt-purge.log; fail "apt-get purge"; }
[ ! -e /etc/rupost/config.json ] || fail "config.json left after purge"
[ ! -e /var/log/rupost ] || fail "/var/log/rupost left after purge"
has_token first-message-1 >/dev/null && has_token after-reinstall-6 >/dev/null || fail "mail lost on purge"
[ "$(databases)" = "rupost,rupost_data,rupost_logs" ] || fail "databases after purge: $(databases)"
[ "$(systemctl is-enabled postfix.service 2>/dev/null || true)" != masked ] || fail "postfix.service still masked after purge"
grep -q "kept" /tmp/apt-purge.log || fail "purge does not say what it kept: $(cat /tmp/apt-purge.log)"
ok "purged; mail and databases kept; distribution units unmasked; purge said: $(grep kept /tmp/apt-purge.log | head -1)"
phase remove-reinstall-purge
echo "NODE-PASS"
