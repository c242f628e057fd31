# Helpers of the scenarios run inside the systemd root (sourced; bash).
set -euo pipefail
password="sdtest-db-pass-1"
mbpass="sdtest-mailbox-pass-1"
domain="sdtest.rupost.test"
box="alice@$domain"
PY=/usr/lib/rupost/venv/bin/python
ok() { echo "  ok  $*"; }
fail() { echo "FAIL: $*"; exit 1; }
measure() { echo "  MEASURE $*"; }
# wait_until SECONDS COMMAND...: bounded wait for a condition
wait_until() { local n=$(( $1 * 5 )); shift; while ! "$@" >/dev/null 2>&1; do n=$((n-1)); [ $n -gt 0 ] || return 1; sleep 0.2; done; }
has_token() { grep -rlsF "$1" /var/vmail; }
deliver() {  # deliver TOKEN: SMTP to port 25, then wait for the message in the mail store
  # null sender: there is no DNS in the namespace for reject_unknown_sender_domain to look up a domain
  swaks --silent 2 --server 127.0.0.1 --port 25 --from "<>" --to "$box" \
    --header "Subject: $1" --body "body $1" || fail "SMTP delivery of $1 refused"
  wait_until 60 has_token "$1" || fail "message $1 not in /var/vmail after 60 s"
}
count_delivered() {  # count_delivered PREFIX: messages in the store whose subject starts with PREFIX
  grep -rlsF "Subject: $1" /var/vmail | wc -l
}
units_of_components() { systemctl list-units --no-legend --plain --all 'rupost-component@*.service' | awk '{print $1, $3, $4}'; }
install_deb() {  # install_deb FILE LOG
  apt-get install -y -q --no-install-recommends "$1" > "$2" 2>&1 || { cat "$2"; fail "apt-get install $1"; }
}
wizard() {
  printf "%s\n" "$password" | rupost-wizard --silent --db-password-stdin --node-name sdtest --fqdn mx.sdtest.rupost.test
}
# The mail load of a scenario: scripts/systemd-node/mailload.py in the background.
load_start() {  # load_start NAME: SMTP sessions to port 25 (and IMAP connects) until load_stop
  rm -f "/tmp/load-$1.stop"
  $PY /root/scenarios/mailload.py --name "$1" --to "$box" --imap-password "$mbpass" > "/tmp/load-$1.json" 2> "/tmp/load-$1.err" &
  echo $! > "/tmp/load-$1.pid"
  wait_until 30 test -s "/tmp/load-$1.started" || fail "mail load $1 did not start: $(cat /tmp/load-$1.err)"
}
load_stop() {  # load_stop NAME [duplicates-ok]: stop the load, print its figures, check nothing accepted was lost
  touch "/tmp/load-$1.stop"
  wait "$(cat "/tmp/load-$1.pid")" || fail "mail load $1: $(cat "/tmp/load-$1.err")"
  local accepted
  accepted=$(figure "$1" accepted)
  [ "$accepted" -gt 0 ] || fail "mail load $1 sent nothing: $(cat "/tmp/load-$1.json")"
  $PY /root/scenarios/mailload.py --check "$1" "$accepted" 90 ${2:-} > "/tmp/load-$1.check" \
    || fail "mail load $1: $(cat "/tmp/load-$1.check") of $(cat "/tmp/load-$1.json")"
  measure "$1: $($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("errors"); print(" ".join(f"{k}={v}" for k,v in d.items()))' "/tmp/load-$1.json") lost=0 duplicated=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["duplicates"]))' "/tmp/load-$1.check")"
}
figure() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "/tmp/load-$1.json" "$2"; }
# no_refusals NAME [FIGURES]: the load met no refused or failed connection (SMTP and IMAP), or none
# of FIGURES (space separated)
no_refusals() {
  local f
  for f in ${2:-refused failed imap_refused imap_failed}; do
    [ "$(figure "$1" "$f")" = 0 ] || fail "mail load $1: $f = $(figure "$1" "$f"): $(cat "/tmp/load-$1.json")"
  done
}
mainpid() { systemctl show -p MainPID --value "rupost-component@$1.service"; }
json_field() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
now() { date +%s.%N; }
elapsed() { $PY -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"; }
COMPONENTS="memcached policy opendkim postsrsd dovecot postfix sogo nginx haproxy"
all_components_active() {
  local c
  for c in $COMPONENTS; do systemctl is-active --quiet "rupost-component@$c.service" || return 1; done
}
# the distribution's units the installed release takes over (its postinst's list)
taken_over_units() {
  sed -n 's/^DISTRO_UNITS="\(.*\)"$/\1/p' /var/lib/dpkg/info/rupost.postinst
}
distribution_units_masked() {
  local unit state
  for unit in $(taken_over_units); do
    state=$(systemctl is-enabled "$unit" 2>/dev/null || true)
    [ -n "$state" ] || continue  # not installed in this root
    [ "$state" = masked ] || fail "$unit not masked: $state"
    systemctl is-active --quiet "$unit" && fail "$unit still running"
  done
  return 0
}
# setup_node DEB: PostgreSQL up, the .deb installed, rupost-wizard, rupost deploy, a mailbox, mail delivered
setup_node() {
  local deb="$1"
  echo "--- PostgreSQL of the root, started by systemd"
  wait_until 60 runuser -u postgres -- psql -X -tAc 'select 1' || fail "postgresql not up: $(systemctl status postgresql@15-main --no-pager)"
  ok "postgresql@15-main $(systemctl is-active postgresql@15-main)"

  echo "--- install: apt-get install ./rupost.deb under systemd"
  install_deb "$deb" /tmp/apt-install.log
  grep -q "rupost-wizard" /tmp/apt-install.log && ok "postinst tells to run rupost-wizard"
  distribution_units_masked
  ok "the distribution's mail units are stopped and masked: $(taken_over_units)"
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
}
t0=$(date +%s)
phase() { local now; now=$(date +%s); echo "  PHASE $1: $((now - t0)) s"; t0=$now; }
