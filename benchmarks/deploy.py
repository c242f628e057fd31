#!/usr/bin/env python3
"""Deploy cost: a full deploy (render, validate, switch, start every daemon, probe) and a
no-change redeploy, with 100 and with 100,000 mailboxes in the database, in one run.

Usage: benchmarks/deploy.py [--quick] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bulk_mailboxes, node_instance, timed  # noqa: E402


def measure(inst, mailboxes: int, repeat: int) -> dict:
    bulk_mailboxes(inst, mailboxes)
    app = inst.app

    def nothing_live():
        app.deploys.deployer.stop_all()
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
    figures = {
        "deploy_s_100": round(small["full_s"], 3),
        f"deploy_s_{'10k' if args.quick else '100k'}": round(big["full_s"], 3),
        "redeploy_nochange_s_100": round(small["no_change_s"], 3),
        f"redeploy_nochange_s_{'10k' if args.quick else '100k'}": round(big["no_change_s"], 3),
        "deploy_ratio_large_vs_100": round(big["full_s"] / small["full_s"], 3),
        "redeploy_ratio_large_vs_100": round(big["no_change_s"] / small["no_change_s"], 3),
    }
    print(f"{'mailboxes':>10}  {'full deploy s (median)':>22}  {'no-change redeploy s (median)':>30}")
    for row in (small, big):
        print(f"{row['mailboxes']:>10}  {row['full_s']:>22.3f}  {row['no_change_s']:>30.3f}")
    print(f"ratio large/100: full {figures['deploy_ratio_large_vs_100']}, "
          f"no-change {figures['redeploy_ratio_large_vs_100']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
