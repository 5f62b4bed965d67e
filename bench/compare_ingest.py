"""Prints our SMTP ingest figures beside Postfix's from the same run, as ratios.

.venv/bin/python bench/compare_ingest.py OUT/postfix.json OUT/ours.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(postfix_path: str, ours_path: str) -> None:
    with open(postfix_path) as f:
        postfix: dict[str, Any] = json.load(f)["scenarios"]
    with open(ours_path) as f:
        ours: dict[str, Any] = json.load(f)["scenarios"]
    print(
        f"{'scenario':18s} {'postfix acc':>11s} {'ours acc':>9s} {'ratio':>6s}"
        f" {'postfix dlv':>11s} {'ours dlv':>9s} {'ratio':>6s}"
    )
    for name, mine in ours.items():
        peer = postfix.get(name)
        if peer is None:
            continue
        acc_ratio = mine["median_accept_rate"] / peer["median_accept_rate"]
        line = (
            f"{name:18s} {peer['median_accept_rate']:11.0f} {mine['median_accept_rate']:9.0f}"
            f" {acc_ratio:6.2f}"
        )
        if "median_e2e_rate" in mine and "median_e2e_rate" in peer:
            dlv_ratio = mine["median_e2e_rate"] / peer["median_e2e_rate"]
            line += (
                f" {peer['median_e2e_rate']:11.0f} {mine['median_e2e_rate']:9.0f} {dlv_ratio:6.2f}"
            )
        print(line)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
