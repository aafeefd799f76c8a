#!/usr/bin/env python3
"""Summarise several rounds of the peer comparison (`run.sh --rounds N`).

Each round timed segloss and then the peers on the same inputs, one round
after the other, so a load that comes and goes on a shared machine falls on
both sides in turn. For every (case, peer) this prints the ratio
peer / segloss of the median wall-clock times in each round, and the median
and range of those ratios: the figure to quote, as the ratio of one round
moves with the load of its minutes.

    python3 benches/peers/rounds.py DIR/round-1 DIR/round-2 ...

Each directory holds a round's `segloss.json` and `peers.json`.
"""

import json
import os
import statistics
import sys


def load(round_dir):
    with open(os.path.join(round_dir, "segloss.json")) as f:
        ours = {c["case"]: c for c in json.load(f)["cases"]}
    with open(os.path.join(round_dir, "peers.json")) as f:
        theirs = json.load(f)["results"]
    return ours, theirs


def main():
    rounds = sys.argv[1:]
    if not rounds:
        sys.exit(__doc__)
    # (case, peer) -> (segloss ns/el, peer ns/el) per round; the ratio of
    # the median times is the ratio of these.
    per_element = {}
    for r in rounds:
        ours, theirs = load(r)
        for result in theirs:
            timing = result["timing"]
            case = result["case"]
            if timing is None or case not in ours:
                continue
            elements = ours[case]["elements"]
            per_element.setdefault((case, result["peer"]), []).append(
                (
                    1e9 * ours[case]["segloss"]["median_s"] / elements,
                    1e9 * timing["median_s"] / elements,
                )
            )
    n = len(rounds)
    print(f"peer / segloss, ratio of the median wall-clock times, {n} rounds:")
    print()
    print("| case | peer | segloss ns/el (rounds) | peer ns/el (rounds) | ratio per round | median | range |")
    print("|---|---|---|---|---|---:|---|")
    for (case, peer), ns in per_element.items():
        rs = [b / a for a, b in ns]
        ours = ", ".join(f"{a:.2f}" for a, _ in ns)
        theirs = ", ".join(f"{b:.1f}" for _, b in ns)
        each = ", ".join(f"{r:.2f}" for r in rs)
        print(
            f"| {case} | {peer} | {ours} | {theirs} | {each} "
            f"| {statistics.median(rs):.2f} | {min(rs):.2f}–{max(rs):.2f} |"
        )


if __name__ == "__main__":
    main()
