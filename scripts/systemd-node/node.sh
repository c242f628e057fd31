#!/bin/bash
# The node under systemd: install, configure, deploy, mail; then the scenarios of issue 27
# (docs/packaging.md, "The systemd node test"). Run inside the booted root by scripts/test-systemd-node.
source /root/scenarios/lib.sh
deb="$1"

setup_node "$deb"
echo "NODE-PASS"
