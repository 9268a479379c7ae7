#!/usr/bin/env python3
"""Independent reference implementation of `credit-sentinel replay` (SPEC.md).

Python 3.11, standard library only.  Written from /work/shared/SPEC.md alone
("Semantics (normative)", "Precise points", the default policy table), to be
differentially tested against the Rust implementation.

Usage:
    ref_replay.py [--until TIME] [--rejects FILE] FILE...     (FILE `-` = stdin)

Prints one JSON object per alert on stdout, ordered by (at, entity_id, rule in
table order).  Bad lines are reported on --rejects (if given) as
`<file>:<line>: <reason>`; they never change anything.

Method (brute force, clarity over speed):
  * every valid first-seen event is stored per (entity, kind) in a list sorted
    by occurred_at (ties in read order);
  * at every instant that matters -- each clock value when the clock moves on
    (or input ends) for the entities that got events while the clock showed it,
    and each timer instant (occurred_at + W, and for complaints
    occurred_at + 2W) for the entities concerned -- the entity's five levels
    are recomputed from scratch and compared with the levels as last evaluated.
"""

import bisect
import heapq
import json
import re
import sys
from fractions import Fraction

# ---------------------------------------------------------------------------
# Policy (SPEC default table, hard-coded)
# ---------------------------------------------------------------------------

ACTIONS = ("remind", "warn", "interview", "inspect")
DAY = 86400

# (rule id, event kind, window days, base thresholds remind..inspect, type)
RULES = (
    ("address-churn", "address_change", 365, (2, 3, 4, 6), "count"),
    ("penalties-3y", "penalty", 1095, (2, 3, 5, 8), "count"),
    ("lawsuits-3y", "lawsuit", 1095, (3, 5, 10, 20), "count"),
    ("complaint-surge", "complaint", 90, (5, 10, 20, 40), "surge"),
    ("sentiment-1m", "negative_sentiment", 30, (2, 3, 5, 10), "count"),
)

KINDS = frozenset({
    "address_change", "penalty", "lawsuit", "complaint",
    "negative_sentiment", "classification", "profile",
})

FACTORS = {
    "A": Fraction(2),
    "B": Fraction(3, 2),
    "C": Fraction(1),
    None: Fraction(1),  # unclassified
    "D": Fraction(1, 2),
}


def effective(base, cls):
    """max(1, ceil(base * f)), exact."""
    v = base * FACTORS[cls]
    ceil = -((-v.numerator) // v.denominator)
    return max(1, ceil)


EFFECTIVE = {
    cls: tuple(tuple(effective(b, cls) for b in rule[3]) for rule in RULES)
    for cls in FACTORS
}


def level_of(value, thresholds):
    """Highest action (1..4) whose threshold `value` reaches, 0 for none.
    When two actions share a threshold the higher one applies (max)."""
    lvl = 0
    for i, th in enumerate(thresholds):
        if value >= th:
            lvl = i + 1
    return lvl


# ---------------------------------------------------------------------------
# Credit code (GB 32100-2015)
# ---------------------------------------------------------------------------

CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters, value = index
CODE_VALUE = {c: i for i, c in enumerate(CODE_CHARS)}
CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def check_char(first17):
    s = sum(CODE_VALUE[c] * w for c, w in zip(first17, CODE_WEIGHTS))
    return CODE_CHARS[(31 - s % 31) % 31]


def valid_code(code):
    if len(code) != 18 or any(c not in CODE_VALUE for c in code):
        return False
    return check_char(code[:17]) == code[17]


# ---------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------

TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.[0-9]+)?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def is_leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def days_in_month(y, m):
    if m == 2:
        return 29 if is_leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def days_from_civil(y, m, d):
    """Days since 1970-01-01 in the proleptic Gregorian calendar (any year)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (m <= 2), m, d)


def parse_time(s):
    """RFC 3339 subset of the SPEC -> UTC epoch seconds (fraction dropped),
    or None when bad."""
    m = TIME_RE.fullmatch(s)
    if m is None:
        return None
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= mo <= 12 and 1 <= d <= days_in_month(y, mo)):
        return None
    if hh > 23 or mi > 59 or ss > 59:
        return None
    off = 0
    if m.group(7) is None:
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            return None
        off = (oh * 60 + om) * 60
        if m.group(8) == "-":
            off = -off
    local = days_from_civil(y, mo, d) * DAY + hh * 3600 + mi * 60 + ss
    return local - off


def format_utc(t):
    """UTC epoch seconds -> YYYY-MM-DDTHH:MM:SSZ.  Years outside 0000-9999
    (possible only via offsets/timers at the edges) print as -YYYY / YYYYY."""
    days, secs = divmod(t, DAY)
    y, m, d = civil_from_days(days)
    if y < 0:
        ys = "-%04d" % -y
    else:
        ys = "%04d" % y
    return "%s-%02d-%02dT%02d:%02d:%02dZ" % (
        ys, m, d, secs // 3600, secs % 3600 // 60, secs % 60)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

MAX_LINE = 65536
MAX_DEPTH = 127  # serde_json's default recursion limit (128) rejects deeper


class Bad(Exception):
    pass


def _pairs_hook(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Bad("repeated key %r" % k)
        d[k] = v
    return d


def _bad_constant(name):
    raise Bad("non-JSON constant %s" % name)


def _parse_float(s):
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise Bad("number out of range")
    return v


def _parse_int(s):
    v = int(s)
    try:
        float(v)
    except OverflowError:
        raise Bad("number out of range")
    return v


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_hook,
    parse_constant=_bad_constant,
    parse_float=_parse_float,
    parse_int=_parse_int,
)


def _check_tree(doc):
    """Reject lone surrogates (from \\u escapes) in any string or key, and
    nesting deeper than MAX_DEPTH.  Both are what serde_json refuses."""
    stack = [(doc, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if any("\ud800" <= c <= "\udfff" for c in v):
                raise Bad("lone surrogate in string")
        elif isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise Bad("nesting too deep")
            for k, x in v.items():
                if any("\ud800" <= c <= "\udfff" for c in k):
                    raise Bad("lone surrogate in key")
                stack.append((x, depth + 1))
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise Bad("nesting too deep")
            for x in v:
                stack.append((x, depth + 1))


class Event:
    __slots__ = ("event_id", "entity_id", "kind", "t", "cls", "seq")

    def __init__(self, event_id, entity_id, kind, t, cls):
        self.event_id = event_id
        self.entity_id = entity_id
        self.kind = kind
        self.t = t
        self.cls = cls
        self.seq = None


def parse_line(raw):
    """bytes (without the newline) -> Event, or raise Bad(reason)."""
    if len(raw) > MAX_LINE:
        raise Bad("line longer than %d bytes" % MAX_LINE)
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise Bad("invalid UTF-8")
    if text.strip() == "" or text.strip(" \t\r\n") == "":
        raise Bad("empty line")
    try:
        doc = _DECODER.decode(text)
    except Bad:
        raise
    except (ValueError, RecursionError) as e:
        raise Bad("not JSON: %s" % e)
    _check_tree(doc)
    if not isinstance(doc, dict):
        raise Bad("not a JSON object")
    for f in ("event_id", "entity_id", "kind", "occurred_at"):
        if not isinstance(doc.get(f), str):
            raise Bad("%s missing, null or not a string" % f)
    src = doc.get("source")
    if src is not None and not isinstance(src, str):
        raise Bad("source not a string")
    data = doc.get("data")
    if data is not None and not isinstance(data, dict):
        raise Bad("data not an object")
    eid = doc["event_id"]
    if len(eid) == 0 or len(eid) > 256:
        raise Bad("event_id empty or longer than 256 characters")
    kind = doc["kind"]
    if kind not in KINDS:
        raise Bad("unknown kind")
    if not valid_code(doc["entity_id"]):
        raise Bad("bad credit code")
    t = parse_time(doc["occurred_at"])
    if t is None:
        raise Bad("bad time")
    cls = None
    if kind == "classification":
        c = data.get("class") if data is not None else None
        if not isinstance(c, str) or c not in ("A", "B", "C", "D"):
            raise Bad("classification without data.class in A B C D")
        cls = c
    return Event(eid, doc["entity_id"], kind, t, cls)


def split_lines(data):
    """Split on b"\\n"; a final piece without newline is a line, nothing after
    a final newline is not."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


# ---------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------

class Entity:
    __slots__ = ("eid", "times", "items", "ctimes", "classes", "last")

    def __init__(self, eid):
        self.eid = eid
        # per rule index: sorted occurred_at list and parallel (t, seq, id)
        self.times = [[] for _ in RULES]
        self.items = [[] for _ in RULES]
        self.ctimes = []    # classification times, sorted, ties in read order
        self.classes = []   # parallel class letters
        self.last = [0] * len(RULES)  # levels as last evaluated

    def class_at(self, t):
        i = bisect.bisect_right(self.ctimes, t)
        return self.classes[i - 1] if i else None

    def count(self, ri, lo, hi):
        """events of rule ri's kind with lo < occurred_at <= hi"""
        ts = self.times[ri]
        return bisect.bisect_right(ts, hi) - bisect.bisect_right(ts, lo)

    def evidence(self, ri, lo, hi):
        ts = self.times[ri]
        a = bisect.bisect_right(ts, lo)
        b = bisect.bisect_right(ts, hi)
        return [it[2] for it in self.items[ri][a:b]]


RULE_INDEX = {r[1]: i for i, r in enumerate(RULES)}


class Replay:
    def __init__(self, out):
        self.out = out
        self.seen = set()
        self.now = None
        self.seq = 0
        self.ents = {}
        self.dirty = set()
        self.timers = []  # heap of (instant, entity_id)
        self.last_at = None
        self.n_alerts = 0

    # -- input ------------------------------------------------------------
    def ingest(self, ev):
        if ev.event_id in self.seen:
            return False
        self.seen.add(ev.event_id)
        self.seq += 1
        ev.seq = self.seq
        if self.now is None:
            self.now = ev.t
        elif ev.t > self.now:
            self.advance(ev.t)
        ent = self.ents.get(ev.entity_id)
        if ent is None:
            ent = self.ents[ev.entity_id] = Entity(ev.entity_id)
        if ev.kind == "classification":
            i = bisect.bisect_right(ent.ctimes, ev.t)
            ent.ctimes.insert(i, ev.t)
            ent.classes.insert(i, ev.cls)
        elif ev.kind in RULE_INDEX:
            ri = RULE_INDEX[ev.kind]
            i = bisect.bisect_right(ent.times[ri], ev.t)
            ent.times[ri].insert(i, ev.t)
            ent.items[ri].insert(i, (ev.t, ev.seq, ev.event_id))
            w = RULES[ri][2] * DAY
            instants = [ev.t + w]
            if RULES[ri][4] == "surge":
                instants.append(ev.t + 2 * w)
            for x in instants:
                if x > self.now:
                    heapq.heappush(self.timers, (x, ev.entity_id))
        self.dirty.add(ev.entity_id)
        return True

    # -- clock --------------------------------------------------------------
    def advance(self, new_now):
        """The clock moves from self.now to new_now (> self.now)."""
        self.flush()
        self.fire_timers(new_now, inclusive=False)
        # timers due exactly at new_now count together with what arrives then
        while self.timers and self.timers[0][0] == new_now:
            self.dirty.add(heapq.heappop(self.timers)[1])
        self.now = new_now

    def flush(self):
        """Evaluate, at now, the entities that got events (or timers) at now."""
        if self.dirty:
            for eid in sorted(self.dirty):
                self.evaluate(self.ents[eid], self.now)
            self.dirty.clear()

    def fire_timers(self, limit, inclusive):
        while self.timers:
            t = self.timers[0][0]
            if t > limit or (t == limit and not inclusive):
                break
            ids = set()
            while self.timers and self.timers[0][0] == t:
                ids.add(heapq.heappop(self.timers)[1])
            for eid in sorted(ids):
                self.evaluate(self.ents[eid], t)

    def finish(self, until):
        if self.now is None:
            return
        self.flush()
        if until is not None and until > self.now:
            self.fire_timers(until, inclusive=True)

    # -- evaluation ------------------------------------------------------------
    def evaluate(self, ent, t):
        cls = ent.class_at(t)
        eff = EFFECTIVE[cls]
        for ri, (rid, kind, wdays, base, typ) in enumerate(RULES):
            w = wdays * DAY
            if typ == "count":
                value = ent.count(ri, t - w, t)
                lvl = level_of(value, eff[ri])
                span = w
            else:
                cur = ent.count(ri, t - w, t)
                prev = ent.count(ri, t - 2 * w, t - w)
                value = cur - prev
                lvl = level_of(value, eff[ri]) if 2 * cur >= 3 * prev else 0
                span = 2 * w
            old = ent.last[ri]
            ent.last[ri] = lvl
            if lvl > old:
                self.emit({
                    "entity_id": ent.eid,
                    "rule": rid,
                    "action": ACTIONS[lvl - 1],
                    "previous_action": ACTIONS[old - 1] if old else None,
                    "at": format_utc(t),
                    "value": value,
                    "threshold": eff[ri][lvl - 1],
                    "class": cls,
                    "evidence": ent.evidence(ri, t - span, t),
                }, t)

    def emit(self, alert, t):
        assert self.last_at is None or t >= self.last_at, "alerts out of order"
        self.last_at = t
        self.n_alerts += 1
        self.out.write(json.dumps(alert, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def main(argv):
    until = None
    rejects = None
    files = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--until" and i + 1 < len(argv):
            until = parse_time(argv[i + 1])
            if until is None:
                sys.stderr.write("bad --until time: %r\n" % argv[i + 1])
                return 2
            i += 2
        elif a.startswith("--until="):
            until = parse_time(a[len("--until="):])
            if until is None:
                sys.stderr.write("bad --until time: %r\n" % a)
                return 2
            i += 1
        elif a == "--rejects" and i + 1 < len(argv):
            rejects = open(argv[i + 1], "w", encoding="utf-8")
            i += 2
        elif a in ("-h", "--help"):
            sys.stdout.write(__doc__)
            return 0
        else:
            files.append(a)
            i += 1
    if not files:
        sys.stderr.write("usage: ref_replay.py [--until TIME] FILE...\n")
        return 2
    sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    rp = Replay(sys.stdout)
    n_bad = n_dup = n_ok = 0
    for name in files:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as f:
                data = f.read()
        for lineno, raw in enumerate(split_lines(data), 1):
            try:
                ev = parse_line(raw)
            except Bad as e:
                n_bad += 1
                if rejects:
                    rejects.write("%s:%d: %s\n" % (name, lineno, e))
                continue
            if rp.ingest(ev):
                n_ok += 1
            else:
                n_dup += 1
    rp.finish(until)
    sys.stdout.flush()
    sys.stderr.write("ref_replay: %d valid, %d duplicate, %d bad, %d alerts\n"
                     % (n_ok, n_dup, n_bad, rp.n_alerts))
    if rejects:
        rejects.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
