#!/bin/bash
# The node under systemd: install, configure, deploy, mail; then the scenarios of issue 27
# (docs/packaging.md, "The systemd node test"). Run inside the booted root by scripts/test-systemd-node.
source /root/scenarios/lib.sh
deb="$1"
t0=$(date +%s)
phase() { local now; now=$(date +%s); echo "  PHASE $1: $((now - t0)) s"; t0=$now; }

echo "--- PostgreSQL of the root, started by systemd"
wait_until 60 runuser -u postgres -- psql -X -tAc 'select 1' || fail "postgresql not up: $(systemctl status postgresql@15-main --no-pager)"
ok "postgresql@15-main $(systemctl is-active postgresql@15-main)"

echo "--- install: apt-get install ./rupost.deb under systemd"
install_deb "$deb" /tmp/apt-install.log
grep -q "rupost-wizard" /tmp/apt-install.log && ok "postinst tells to run rupost-wizard"
for unit in postfix.service dovecot.service nginx.service haproxy.service memcached.service sogo.service; do
  [ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" = masked ] || fail "$unit not masked: $(systemctl is-enabled "$unit")"
  systemctl is-active --quiet "$unit" && fail "$unit still running"
done
ok "the distribution's mail units are stopped and masked"
systemctl is-enabled --quiet rupost-scheduler.service || fail "rupost-scheduler.service not enabled"
phase install

echo "--- rupost-wizard --silent, rupost deploy (SystemdBackend)"
wizard > /tmp/wizard.log 2>&1 || { cat /tmp/wizard.log; fail "rupost-wizard"; }
grep -q "timers registered" /tmp/wizard.log || fail "wizard did not register the timers: $(cat /tmp/wizard.log)"
rupost deploy > /tmp/deploy.log 2>&1 || { cat /tmp/deploy.log; fail "rupost deploy"; }
rupost domains add "$domain" >/dev/null
echo "$mbpass" | rupost mailboxes add "$box" --password-stdin >/dev/null
units_of_components
deliver first-message-1
ok "mail delivered over SMTP into /var/vmail"
phase configure-deploy
echo "NODE-PASS"
