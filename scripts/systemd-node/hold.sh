#!/bin/bash
# A debugging aid: the configured node under systemd, held until /tmp/release exists in the root
# (at most 40 min). Enter it with: nsenter -t PID1 -m -p -u -i -n -C -r -w bash
source /root/scenarios/lib.sh
setup_node "$1"
echo "HOLDING: touch /tmp/release inside the root to end"
for _ in $(seq 2400); do [ -e /tmp/release ] && break; sleep 1; done
