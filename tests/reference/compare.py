#!/usr/bin/env python3
"""Compare two alert streams (JSON Lines) on the fields the SPEC fixes.

Usage: compare.py [--max N] A.jsonl B.jsonl

Compared, in stream order: entity_id, rule, action, previous_action, at, value,
threshold, class, evidence.  Anything else (alert_id, rule_version, windows,
shadow, ...) is ignored.  `at` is compared as an instant (so
2025-01-01T00:00:00Z equals 2025-01-01T00:00:00+00:00 or ...00.000Z); a
difference in spelling only is reported as a note, not a failure.

Exit status: 0 equal, 1 different, 2 unreadable input.
"""

import collections
import json
import re
import sys

# The calendar arithmetic of the reference implementation (same folder).
from ref_replay import days_from_civil

FIELDS = ("entity_id", "rule", "action", "previous_action", "at", "value",
          "threshold", "class", "evidence")

AT_RE = re.compile(r"([+-]?[0-9]{4,})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                   r"(?:\.[0-9]+)?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))")


def instant(s):
    if not isinstance(s, str):
        return None
    m = AT_RE.fullmatch(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    off = 0
    if m.group(7) is None:
        off = (int(m.group(9)) * 60 + int(m.group(10))) * 60
        if m.group(8) == "-":
            off = -off
    return days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off


def load(path):
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                a = json.loads(raw)
            except ValueError as e:
                sys.stderr.write("%s:%d: not JSON: %s\n" % (path, n, e))
                sys.exit(2)
            if not isinstance(a, dict):
                sys.stderr.write("%s:%d: not an object\n" % (path, n))
                sys.exit(2)
            out.append((n, a))
    return out


def key(a):
    """Normalised comparable tuple of the SPEC fields."""
    vals = []
    for f in FIELDS:
        v = a.get(f, "<missing>")
        if f == "at":
            t = instant(v)
            v = ("@", t) if t is not None else v
        elif f == "evidence" and isinstance(v, list):
            v = tuple(v)
        elif f == "value" or f == "threshold":
            # 5 and 5.0 are the same number; True is not a number
            if isinstance(v, float) and v.is_integer():
                v = int(v)
        vals.append(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
    return tuple(vals)


def show(a):
    return json.dumps({f: a.get(f, "<missing>") for f in FIELDS}, ensure_ascii=False)


def main(argv):
    maxn = 10
    if len(argv) >= 2 and argv[0] == "--max":
        maxn = int(argv[1])
        argv = argv[2:]
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    pa, pb = argv
    A, B = load(pa), load(pb)
    ka = [key(a) for _, a in A]
    kb = [key(b) for _, b in B]
    notes = 0
    for (na, a), (nb, b) in zip(A, B):
        if a.get("at") != b.get("at") and instant(a.get("at")) == instant(b.get("at")) \
                and instant(a.get("at")) is not None and notes < 3:
            print("note: `at` spelled differently: %r (%s:%d) vs %r (%s:%d)"
                  % (a.get("at"), pa, na, b.get("at"), pb, nb))
            notes += 1
    if ka == kb:
        print("equal: %d alerts" % len(ka))
        return 0
    print("DIFFERENT: %s has %d alerts, %s has %d" % (pa, len(ka), pb, len(kb)))
    # first positional differences
    shown = 0
    i = 0
    while i < max(len(ka), len(kb)) and shown < maxn:
        x = ka[i] if i < len(ka) else None
        y = kb[i] if i < len(kb) else None
        if x != y:
            shown += 1
            print("\n#%d (alert index %d)" % (shown, i))
            if x is not None:
                print("  A %s:%d %s" % (pa, A[i][0], show(A[i][1])))
            else:
                print("  A <end of stream>")
            if y is not None:
                print("  B %s:%d %s" % (pb, B[i][0], show(B[i][1])))
            else:
                print("  B <end of stream>")
            if x is not None and y is not None:
                diff = [f for f, u, v in zip(FIELDS, x, y) if u != v]
                print("  fields differing: %s" % ", ".join(diff))
            if shown == 1 and x is not None and y is not None:
                # after the first difference the streams usually stay shifted;
                # the multiset view below is more useful than more positions
                break
        i += 1
    ca, cb = collections.Counter(ka), collections.Counter(kb)
    only_a = ca - cb
    only_b = cb - ca
    if not only_a and not only_b:
        print("\nsame alerts, different order (expected order: at, entity_id, rule table order)")
    else:
        index_a = {}
        for (n, a), k in zip(A, ka):
            index_a.setdefault(k, (n, a))
        index_b = {}
        for (n, b), k in zip(B, kb):
            index_b.setdefault(k, (n, b))
        print("\n%d alert(s) only in A (%s), %d only in B (%s)"
              % (sum(only_a.values()), pa, sum(only_b.values()), pb))
        for label, only, idx, path in (("only in A", only_a, index_a, pa),
                                       ("only in B", only_b, index_b, pb)):
            items = sorted(only, key=lambda k: (idx[k][0]))[:maxn]
            for k in items:
                n, a = idx[k]
                print("  %s %s:%d %s" % (label, path, n, show(a)))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
