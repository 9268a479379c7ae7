#!/usr/bin/env python3
"""Second, deliberately different engine used only by selftest.py to
cross-check ref_replay.py's clock/timer logic.

It shares the line parser with ref_replay.py, then works from the whole list
of valid first-seen events at once: it splits them into "ticks" (events read
while the clock showed one value), collects every instant at which any level
could change (every clock value, every occurred_at + W and + 2W), and
evaluates EVERY entity at EVERY such instant up to the horizon, with the
events known at that instant (ticks whose clock value is <= the instant).
No heap, no dirty set, no per-event timers.

Usage: naive_replay.py [--until TIME] FILE...
"""

import bisect
import json
import sys

sys.dont_write_bytecode = True  # keep tests/reference free of __pycache__

import ref_replay as R


def run(events, until):
    """events: valid first-seen events in read order. Returns alert dicts."""
    if not events:
        return []
    # ticks
    ticks = []  # (clock value, [events])
    clock = None
    for ev in events:
        if clock is None or ev.t > clock:
            clock = ev.t
            ticks.append((clock, []))
        ticks[-1][1].append(ev)
    horizon = clock if until is None else max(until, clock)
    instants = set(c for c, _ in ticks)
    for ev in events:
        if ev.kind in R.RULE_INDEX:
            ri = R.RULE_INDEX[ev.kind]
            w = R.RULES[ri][2] * R.DAY
            instants.add(ev.t + w)
            instants.add(ev.t + 2 * w)
    first = ticks[0][0]
    instants = sorted(x for x in instants if first <= x <= horizon)
    entities = sorted(set(ev.entity_id for ev in events))
    # known state, grown tick by tick
    known = {e: {"kinds": [[] for _ in R.RULES], "cls": []} for e in entities}
    last = {e: [0] * len(R.RULES) for e in entities}
    alerts = []
    ti = 0
    for t in instants:
        while ti < len(ticks) and ticks[ti][0] <= t:
            for ev in ticks[ti][1]:
                k = known[ev.entity_id]
                if ev.kind == "classification":
                    k["cls"].append((ev.t, ev.seq, ev.cls))
                    k["cls"].sort()
                elif ev.kind in R.RULE_INDEX:
                    lst = k["kinds"][R.RULE_INDEX[ev.kind]]
                    lst.append((ev.t, ev.seq, ev.event_id))
                    lst.sort()
            ti += 1
        for e in entities:
            k = known[e]
            cls = None
            for (ct, _, c) in k["cls"]:
                if ct <= t:
                    cls = c
            for ri, (rid, kind, wdays, base, typ) in enumerate(R.RULES):
                w = wdays * R.DAY
                lst = k["kinds"][ri]
                times = [x[0] for x in lst]
                cur = bisect.bisect_right(times, t) - bisect.bisect_right(times, t - w)
                ths = [R.effective(b, cls) for b in base]
                if typ == "count":
                    value, ok, span = cur, True, w
                else:
                    prev = bisect.bisect_right(times, t - w) - bisect.bisect_right(times, t - 2 * w)
                    value, ok, span = cur - prev, 2 * cur >= 3 * prev, 2 * w
                lvl = 0
                if ok:
                    for i, th in enumerate(ths):
                        if value >= th:
                            lvl = i + 1
                old = last[e][ri]
                last[e][ri] = lvl
                if lvl > old:
                    alerts.append({
                        "entity_id": e, "rule": rid, "action": R.ACTIONS[lvl - 1],
                        "previous_action": R.ACTIONS[old - 1] if old else None,
                        "at": R.format_utc(t), "value": value, "threshold": ths[lvl - 1],
                        "class": cls,
                        "evidence": [x[2] for x in lst if t - span < x[0] <= t],
                    })
    return alerts


def load(files):
    seen = set()
    events = []
    seq = 0
    for name in files:
        data = sys.stdin.buffer.read() if name == "-" else open(name, "rb").read()
        for raw in R.split_lines(data):
            try:
                ev = R.parse_line(raw)
            except R.Bad:
                continue
            if ev.event_id in seen:
                continue
            seen.add(ev.event_id)
            seq += 1
            ev.seq = seq
            events.append(ev)
    return events


def main(argv):
    until = None
    if len(argv) >= 2 and argv[0] == "--until":
        until = R.parse_time(argv[1])
        argv = argv[2:]
    sys.stdout.reconfigure(encoding="utf-8")
    for a in run(load(argv), until):
        sys.stdout.write(json.dumps(a, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
