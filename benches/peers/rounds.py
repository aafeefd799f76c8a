#!/usr/bin/env python3
"""Summarise several rounds of the peer comparison (`run.sh --rounds N`).

Each round timed segloss and then the peers on the same inputs, one round
after the other, so a load that comes and goes on a shared machine falls on
both sides in turn. For every (case, peer) this prints the ratio
peer / segloss of the median wall-clock times in each round, and the median
and range of those ratios: the figure to quote, as the ratio of one round
moves with the load of its minutes.

For the loss cases it also prints the peer's time over the case's memory
floor, timed by the segloss side in the same round (its median over the
rounds): the highest ratio to that peer that any implementation moving
the floor's bytes could reach on this machine.

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
    # (case, peer) -> (segloss ns/el, peer ns/el, floor ns/el or None) per
    # round; the ratio of the median times is the ratio of the first two.
    per_element = {}
    for r in rounds:
        ours, theirs = load(r)
        for result in theirs:
            timing = result["timing"]
            case = result["case"]
            if timing is None or case not in ours:
                continue
            elements = ours[case]["elements"]
            floor = ours[case].get("floor")
            per_element.setdefault((case, result["peer"]), []).append(
                (
                    1e9 * ours[case]["segloss"]["median_s"] / elements,
                    1e9 * timing["median_s"] / elements,
                    1e9 * floor["median_s"] / elements if floor else None,
                )
            )
    n = len(rounds)
    print(f"peer / segloss, ratio of the median wall-clock times, {n} rounds:")
    print()
    print(
        "| case | peer | segloss ns/el (rounds) | peer ns/el (rounds) | ratio per round | median | range "
        "| floor ns/el (rounds) | peer / floor (median) |"
    )
    print("|---|---|---|---|---|---:|---|---|---:|")
    for (case, peer), ns in per_element.items():
        rs = [b / a for a, b, _ in ns]
        ours = ", ".join(f"{a:.2f}" for a, _, _ in ns)
        theirs = ", ".join(f"{b:.1f}" for _, b, _ in ns)
        each = ", ".join(f"{r:.2f}" for r in rs)
        floors, ceiling = "–", "–"
        if all(f is not None for _, _, f in ns):
            floors = ", ".join(f"{f:.2f}" for _, _, f in ns)
            ceiling = f"{statistics.median(b / f for _, b, f in ns):.2f}"
        print(
            f"| {case} | {peer} | {ours} | {theirs} | {each} "
            f"| {statistics.median(rs):.2f} | {min(rs):.2f}–{max(rs):.2f} | {floors} | {ceiling} |"
        )


if __name__ == "__main__":
    main()
