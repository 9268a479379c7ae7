#!/usr/bin/env python3
"""Hostile JSON Lines event stream for differential tests of `replay`.

Usage:
    hostile_gen.py --seed N --lines N [--entities N] [--gray] [--far-future yes|no|auto]

Writes exactly --lines lines (bytes) to stdout, deterministic for a seed.  The
stream mixes:
  * valid events of all seven kinds on few entities (a rotating "hot" set gets
    most of them), bursts that cross every threshold, same-second ties,
    classifications A/B/C/D (ties at one second, late ones, class changes at the
    same second as arrivals), two entities that are never validly classified;
  * events exactly at window boundaries (occurred_at + W, + W +/- 1 s, and for
    complaints + 2W), the complaint-surge "prev falls with no new event"
    pattern, quiet gaps that drain windows, late (out-of-order) events;
  * duplicates: exact copies, same event_id with other content (also in the
    future, which must not move the clock), ids written with \\u escapes, bad
    lines whose id is later used by a valid line;
  * mixed offsets (Z z +08:00 -05:30 +05:45 +23:59 -00:00 ...), lower-case t,
    fractions, years 0000 / 2000-02-29, extra fields, escaped keys, CRLF,
    a valid line of exactly 65536 bytes, event_ids of exactly 256 characters;
  * bad lines of every kind in SPEC "Bad input, exactly".
--gray adds lines whose fate is implementation-defined JSON (lone surrogate
escapes, numbers out of f64 range, nesting deeper than 127, a UTF-8 BOM); the
reference rejects them like serde_json does by default.
--far-future: end the stream with a valid event at 9999-12-31T23:59:59Z, which
fires every pending timer (auto: for seeds = 2 mod 3).
"""

import argparse
import heapq
import json
import random
import sys

# The calendar arithmetic of the reference implementation (same folder).
from ref_replay import days_from_civil, civil_from_days

DAY = 86400
CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
COUNT_KINDS = ("address_change", "penalty", "lawsuit", "complaint", "negative_sentiment")
WINDOW = {"address_change": 365, "penalty": 1095, "lawsuit": 1095,
          "complaint": 90, "negative_sentiment": 30}
ALL_KINDS = COUNT_KINDS + ("classification", "profile")
MAX_LINE = 65536


def check_char(first17):
    s = sum(CODE_CHARS.index(c) * w for c, w in zip(first17, CODE_WEIGHTS))
    return CODE_CHARS[(31 - s % 31) % 31]


def make_code(rng):
    head = rng.choice(["91", "92", "93", "11", "12", "51", "52", "Y1"])
    region = "".join(rng.choice("0123456789") for _ in range(6))
    body = rng.choice("ABCDEFGHJKLMNPQRTUWXY") + "".join(
        rng.choice(CODE_CHARS) for _ in range(8))
    s = head + region + body
    return s + check_char(s)


class Raw:
    """Pre-rendered JSON text for a value."""

    def __init__(self, s):
        self.s = s


ABSENT = object()

OFFSETS_MIN = [0, 0, 0, 0, 480, 480, 480, -330, 345, -720, 840, 1439, -1439, -300, 60, -60]


class Gen:
    def __init__(self, seed, n_lines, n_entities, gray):
        self.rng = random.Random(seed)
        self.seed = seed
        self.n_lines = n_lines
        self.gray = gray
        self.lines = []
        self.valid = []          # (line bytes, event_id, entity, kind, t)
        self.hist = {}           # (entity, kind) -> list of t
        self.reuse_ids = []      # ids seen on bad lines, for later valid lines
        self.scheduled = []      # heap (t, serial, entity, kind)
        self.n_id = 0
        self.serial = 0
        rng = self.rng
        n = max(3, n_entities)
        self.entities = []
        while len(self.entities) < n:
            c = make_code(rng)
            if c not in self.entities:
                self.entities.append(c)
        self.unclassified = set(self.entities[:2])
        self.classifiable = [e for e in self.entities if e not in self.unclassified]
        self.hot = rng.sample(self.entities, min(3, n))
        self.cursor = days_from_civil(rng.randint(1995, 2015), rng.randint(1, 12),
                                      rng.randint(1, 28)) * DAY + rng.randint(0, DAY - 1)

    # -- helpers -----------------------------------------------------------
    def entity(self):
        if self.rng.random() < 0.8:
            return self.rng.choice(self.hot)
        return self.rng.choice(self.entities)

    def new_id(self):
        self.n_id += 1
        r = self.rng.random()
        base = "ev-%d-%d" % (self.seed, self.n_id)
        if r < 0.03:
            return "事件-%d-%d" % (self.seed, self.n_id)
        if r < 0.04:  # exactly 256 ASCII characters
            return base + "x" * (256 - len(base))
        if r < 0.05:  # exactly 256 characters, mostly 3-byte ones
            return base + "号" * (256 - len(base))
        if r < 0.06:
            return base + " with spaces/and\"quotes\\"
        return base

    def take_id(self):
        if self.reuse_ids and self.rng.random() < 0.5:
            return self.reuse_ids.pop(0)
        return self.new_id()

    def fmt_time(self, t, off_min=None, plain=False):
        rng = self.rng
        if off_min is None:
            off_min = 0 if plain else rng.choice(OFFSETS_MIN)
        local = t + off_min * 60
        days, secs = divmod(local, DAY)
        y, m, d = civil_from_days(days)
        if not 0 <= y <= 9999:
            off_min = 0
            days, secs = divmod(t, DAY)
            y, m, d = civil_from_days(days)
        sep = "T" if plain or rng.random() < 0.9 else "t"
        s = "%04d-%02d-%02d%s%02d:%02d:%02d" % (y, m, d, sep, secs // 3600,
                                                secs % 3600 // 60, secs % 60)
        if not plain and rng.random() < 0.15:
            s += "." + "".join(rng.choice("0123456789")
                               for _ in range(rng.choice([1, 3, 6, 9, 12, 30])))
        if off_min == 0:
            s += "Z" if plain else rng.choice(["Z", "Z", "z", "+00:00", "-00:00"])
        else:
            a = abs(off_min)
            s += "%s%02d:%02d" % ("+" if off_min > 0 else "-", a // 60, a % 60)
        return s

    def dumps(self, v, ea):
        if isinstance(v, Raw):
            return v.s
        return json.dumps(v, ensure_ascii=ea)

    def render(self, pairs, escape_id=False):
        rng = self.rng
        ea = rng.random() < 0.3
        colon, comma = rng.choice([(":", ","), (": ", ", "), (" : ", " , "),
                                   (":\t", ",\t"), (":", ",")])
        parts = []
        for k, v in pairs:
            ks = json.dumps(k, ensure_ascii=ea)
            if rng.random() < 0.01 and k:  # same key, first letter escaped
                ks = '"\\u%04x%s"' % (ord(k[0]), json.dumps(k)[2:-1])
            if escape_id and k == "event_id" and isinstance(v, str):
                vs = '"' + "".join("\\u%04x" % ord(c) if ord(c) < 0x10000 else c
                                   for c in v) + '"'
            else:
                vs = self.dumps(v, ea)
            parts.append(ks + colon + vs)
        s = "{" + comma.join(parts) + "}"
        r = rng.random()
        if r < 0.02:
            s = "  " + s
        elif r < 0.04:
            s = s + " \t"
        elif r < 0.07:
            s = s + "\r"  # CRLF line ending
        return s.encode("utf-8")

    def data_for(self, kind, cls=None):
        rng = self.rng
        if kind == "classification":
            d = {"class": cls}
            if rng.random() < 0.2:
                d["period"] = "%04d-%02d" % (rng.randint(2000, 2040), rng.randint(1, 12))
            return d
        if kind == "profile":
            return {"name": rng.choice(["新余某某食品有限公司", "渝水区某药房", "Acme Ltd"]),
                    "region": rng.choice(["360502", "360500", "110105"]),
                    "industry": rng.choice(["餐饮", "零售", "制造"]),
                    "domain": rng.choice(["food", "drug", "special_equipment", "general"]),
                    "authority": rng.choice(["食品股", "药品股", "特设股", "城北分局"])}
        r = rng.random()
        if r < 0.3:
            return ABSENT
        if r < 0.4:
            return None
        if r < 0.5:
            return {}
        return {"note": rng.choice(["投诉", "x", "é", "\u2028", "😀"]),
                "amount": rng.choice([1, 2.5, -0.0, 1e300, 12345678901234567890]),
                "nested": {"list": [1, {"a": None}, [True, False]], "s": "a\"b\\c"}}

    def pairs(self, eid, ent, kind, t, cls=None, data=ABSENT, source=ABSENT,
              time_text=None):
        rng = self.rng
        p = [("event_id", eid), ("entity_id", ent), ("kind", kind),
             ("occurred_at", time_text if time_text is not None else self.fmt_time(t))]
        if source is ABSENT and rng.random() < 0.7:
            source = rng.choice(["12315", "registration", "court", "sentiment", None, ""])
        if source is not ABSENT:
            p.append(("source", source))
        if data is ABSENT:
            data = self.data_for(kind, cls)
        if data is not ABSENT:
            p.append(("data", data))
        if rng.random() < 0.04:
            p.append(("schema_version", rng.choice([2, "v2", None, [1], {"x": 1}])))
        if rng.random() < 0.3:
            rng.shuffle(p)
        return p

    # -- emitting ------------------------------------------------------------
    def emit(self, line):
        self.lines.append(line)

    def emit_valid(self, ent, kind, t, cls=None, eid=None, data=ABSENT, schedule=True,
                   escape_id=False):
        rng = self.rng
        if eid is None:
            eid = self.take_id()
        if kind == "classification" and cls is None:
            cls = rng.choice("ABCD")
        line = self.render(self.pairs(eid, ent, kind, t, cls=cls, data=data),
                           escape_id=escape_id or rng.random() < 0.01)
        self.emit(line)
        self.valid.append((line, eid, ent, kind, t))
        self.hist.setdefault((ent, kind), []).append(t)
        if schedule and kind in WINDOW:
            w = WINDOW[kind] * DAY
            r = rng.random()
            target = None
            if r < 0.04:
                target = t + w
            elif r < 0.05:
                target = t + w + rng.choice([-1, 1])
            elif r < 0.07 and kind == "complaint":
                target = t + 2 * w + rng.choice([0, 0, 0, -1, 1])
            if target is not None:
                self.serial += 1
                heapq.heappush(self.scheduled, (target, self.serial, ent, kind))
        return eid

    def advance_to(self, t):
        """Move the cursor forward to t, emitting scheduled boundary events in
        time order on the way."""
        while self.scheduled and self.scheduled[0][0] <= t and not self.full():
            st, _, ent, kind = heapq.heappop(self.scheduled)
            self.cursor = max(self.cursor, st)
            self.emit_valid(ent, kind, st, schedule=self.rng.random() < 0.5)
            if self.rng.random() < 0.3:  # a second one at the very same instant
                self.emit_valid(ent, kind, st, schedule=False)
        self.cursor = max(self.cursor, t)

    def step(self):
        r = self.rng.random()
        if r < 0.25:
            d = 0
        elif r < 0.45:
            d = self.rng.randint(1, 60)
        elif r < 0.9:
            d = self.rng.randint(60, 6 * 3600)
        else:
            d = self.rng.randint(6 * 3600, 3 * DAY)
        self.advance_to(self.cursor + d)

    def full(self):
        return len(self.lines) >= self.n_lines

    # -- scenarios ------------------------------------------------------------
    def sc_single(self):
        self.step()
        kind = self.rng.choice(COUNT_KINDS + COUNT_KINDS + ("complaint", "profile"))
        self.emit_valid(self.entity(), kind, self.cursor)

    def sc_burst(self):
        rng = self.rng
        ent = self.entity()
        kind = rng.choice(COUNT_KINDS + ("complaint", "complaint", "negative_sentiment"))
        r = rng.random()
        if r < 0.6:
            n = rng.randint(2, 7)
        elif r < 0.9:
            n = rng.randint(8, 25)
        else:
            n = rng.randint(26, 100 if kind == "complaint" else 45)
        spread = {"negative_sentiment": 3 * 3600, "complaint": 12 * 3600}.get(kind, DAY)
        for _ in range(n):
            if self.full():
                return
            x = rng.random()
            d = 0 if x < 0.3 else rng.randint(1, spread)
            self.advance_to(self.cursor + d)
            self.emit_valid(ent, kind, self.cursor)

    def sc_surge_drop(self):
        """prev group, then a bigger cur group 91..179 days later with
        2*cur < 3*prev: the level rises only when prev departs (no event)."""
        rng = self.rng
        ent = self.entity()
        p = rng.randint(4, 45)
        hi = (3 * p - 1) // 2  # largest c with 2c < 3p
        c = rng.randint(p + 1, hi) if hi >= p + 1 else p
        self.step()
        for _ in range(p):
            if self.full():
                return
            self.advance_to(self.cursor + rng.choice([0, 0, 1, 30]))
            self.emit_valid(ent, "complaint", self.cursor, schedule=False)
        self.advance_to(self.cursor + rng.randint(91, 179) * DAY + rng.randint(0, DAY))
        for _ in range(c):
            if self.full():
                return
            self.advance_to(self.cursor + rng.choice([0, 0, 1, 60]))
            self.emit_valid(ent, "complaint", self.cursor, schedule=False)

    def sc_boundary_now(self):
        """An event exactly W after an earlier same-kind event of the entity,
        when that instant is close ahead (so it arrives in time order)."""
        rng = self.rng
        cands = []
        for (ent, kind), ts in self.hist.items():
            if kind not in WINDOW:
                continue
            w = WINDOW[kind] * DAY
            for t in ts[-300:]:
                for target in ((t + w, t + 2 * w) if kind == "complaint" else (t + w,)):
                    if self.cursor <= target <= self.cursor + 20 * DAY:
                        cands.append((target, ent, kind))
        if not cands:
            return self.sc_single()
        target, ent, kind = min(cands) if rng.random() < 0.5 else rng.choice(cands)
        self.advance_to(target)
        for _ in range(rng.choice([1, 1, 2])):
            self.emit_valid(ent, kind, target)

    def sc_classification(self):
        rng = self.rng
        ent = rng.choice(self.classifiable)
        r = rng.random()
        if r < 0.55:
            self.step()
            self.emit_valid(ent, "classification", self.cursor)
        elif r < 0.7:  # several at the same second: the one read last wins
            self.step()
            for _ in range(rng.randint(2, 3)):
                self.emit_valid(ent, "classification", self.cursor)
        elif r < 0.85:  # late classification
            t = self.cursor - rng.randint(1, 200 * DAY)
            self.emit_valid(ent, "classification", t)
        else:  # class change at the same second as arrivals
            self.step()
            kind = rng.choice(COUNT_KINDS)
            self.emit_valid(ent, kind, self.cursor)
            self.emit_valid(ent, "classification", self.cursor, cls=rng.choice("AD"))
            self.emit_valid(ent, kind, self.cursor)

    def sc_late(self):
        rng = self.rng
        ent = self.entity()
        kind = rng.choice(COUNT_KINDS)
        n = 1 if rng.random() < 0.7 else rng.randint(2, 12)
        r = rng.random()
        if r < 0.3:
            back = rng.randint(1, 60)
        elif r < 0.7:
            back = rng.randint(3600, 30 * DAY)
        else:
            back = rng.randint(30 * DAY, 1200 * DAY)
        for _ in range(n):
            if self.full():
                return
            t = self.cursor - back - rng.randint(0, 5 * DAY)
            self.emit_valid(ent, kind, t)

    def sc_profile(self):
        self.step()
        self.emit_valid(self.entity(), "profile", self.cursor)

    def sc_dup_exact(self):
        if not self.valid:
            return self.sc_single()
        line = self.rng.choice(self.valid)[0]
        self.emit(line)

    def sc_dup_diff(self):
        """Same event_id as an earlier valid event, other content; sometimes in
        the future (must not move the clock), sometimes with \\u escapes."""
        rng = self.rng
        if not self.valid:
            return self.sc_single()
        _, eid, ent, kind, t = rng.choice(self.valid[-2000:])
        kind2 = rng.choice(ALL_KINDS)
        t2 = self.cursor + rng.randint(1, 400 * DAY) if rng.random() < 0.5 else t
        ent2 = self.entity()
        cls = rng.choice("ABCD")
        line = self.render(self.pairs(eid, ent2, kind2, t2, cls=cls),
                           escape_id=rng.random() < 0.3)
        self.emit(line)

    def sc_advance(self, lo, hi):
        self.advance_to(self.cursor + self.rng.randint(lo, hi))

    def sc_exact_length(self):
        """A valid line of exactly 65536 bytes and a bad one of 65537."""
        rng = self.rng
        for target, ok in ((MAX_LINE, True), (MAX_LINE + 1, False)):
            self.step()
            ent = self.entity()
            kind = rng.choice(COUNT_KINDS)
            eid = self.take_id() if ok else self.new_id()
            base = [("event_id", eid), ("entity_id", ent), ("kind", kind),
                    ("occurred_at", self.fmt_time(self.cursor))]
            stub = json.dumps(dict(base + [("data", {"pad": ""})]), ensure_ascii=False)
            room = target - len(stub.encode("utf-8"))
            # pad with 3-byte characters, then ASCII for the remainder
            pad = "填" * (room // 3 // 2)
            pad += "p" * (room - len(pad.encode("utf-8")))
            line = json.dumps(dict(base + [("data", {"pad": pad})]),
                              ensure_ascii=False).encode("utf-8")
            assert len(line) == target, (len(line), target)
            self.emit(line)
            if ok:
                self.valid.append((line, eid, ent, kind, self.cursor))
                self.hist.setdefault((ent, kind), []).append(self.cursor)
            else:
                self.reuse_ids.append(eid)

    def sc_extreme_years(self):
        rng = self.rng
        ent = self.entity()
        texts = ["0000-01-01T00:00:00Z", "0000-02-29T12:00:00Z", "0000-01-01T00:30:00+01:00",
                 "2000-02-29T00:00:00+08:00", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                 "0400-02-29T00:00:00-23:59", "1600-02-29t00:00:00z"]
        txt = rng.choice(texts)
        eid = self.take_id()
        line = self.render(self.pairs(eid, ent, rng.choice(COUNT_KINDS), 0, time_text=txt))
        self.emit(line)

    # -- bad lines -------------------------------------------------------------
    def bad_base(self, eid=None, kind=None, t=None):
        rng = self.rng
        eid = eid or self.new_id()
        kind = kind or rng.choice(COUNT_KINDS)
        t = self.cursor + rng.choice([0, 0, 1, 3600, 40 * DAY]) if t is None else t
        return eid, self.pairs(eid, self.entity(), kind, t)

    def replace(self, pairs, key, value):
        out = [(k, value if k == key else v) for k, v in pairs]
        if key not in [k for k, _ in pairs]:
            out.append((key, value))
        return out

    def drop(self, pairs, key):
        return [(k, v) for k, v in pairs if k != key]

    def bad_line(self):
        """Returns (bytes, event_id or None)."""
        rng = self.rng
        cat = rng.choice(["overlong", "utf8", "empty", "notjson", "dupkey", "nan",
                          "required", "source", "data", "event_id", "kind", "code",
                          "code", "time", "time", "time", "class"]
                         + (["gray"] if self.gray else []))
        eid, p = self.bad_base()
        if cat == "overlong":
            n = rng.choice([MAX_LINE + 1, MAX_LINE + 2, 70000, 100000])
            line = self.render(self.replace(p, "data", {"pad": ""}))
            line = line.replace(b'"pad":""', b'"pad":"' + b"x" * n + b'"')
            line = line.replace(b'"pad": ""', b'"pad": "' + b"x" * n + b'"')
            line = line.replace(b'"pad" : ""', b'"pad" : "' + b"x" * n + b'"')
            line = line.replace(b'"pad":\t""', b'"pad":\t"' + b"x" * n + b'"')
            if len(line) <= MAX_LINE:
                line = line + b" " * (MAX_LINE + 1 - len(line))
            return line, eid
        if cat == "utf8":
            bad = rng.choice([b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80",
                              b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xfe\xfe"])
            line = self.render(self.replace(p, "source", "MARK"))
            if rng.random() < 0.5:
                return line.replace(b"MARK", b"M" + bad + b"K"), eid
            return line + bad, eid
        if cat == "empty":
            return rng.choice([b"", b"", b" ", b"\t", b"  \t ", b"\r", b" \r"]), None
        if cat == "notjson":
            line = self.render(p)
            choice = rng.randint(0, 13)
            return [
                b"not json",
                b"{",
                line[:len(line) // 2],
                line + b" x",
                line + b",",
                line + line,
                b"[" + line + b"]",
                b'"' + eid.encode() + b'"',
                b"42", b"null", b"true",
                line.replace(b'"', b"'"),
                line.rstrip(b"\r \t")[:-1] + b",}",
                line.replace(b'"event_id"', b'"event_id\x01"'),
            ][choice], eid
        if cat == "dupkey":
            k = rng.randint(0, 4)
            if k == 0:  # top-level repeat, same value
                key, val = rng.choice(p)
                return self.render(p + [(key, val)]), eid
            if k == 1:  # top-level repeat via escape
                return self.render(p + [("kind", Raw('"penalty"'))]).replace(
                    b'"kind"', b'"\\u006bind"', 1), eid
            if k == 2:
                return self.render(self.replace(p, "data", Raw('{"a":1,"b":2,"a":1}'))), eid
            if k == 3:
                return self.render(self.replace(
                    p, "data", Raw('{"x":{"y":[{"z":1,"z":2}]}}'))), eid
            q = self.replace(p, "kind", "classification")
            return self.render(self.replace(q, "data", Raw('{"class":"A","class":"D"}'))), eid
        if cat == "nan":
            return self.render(self.replace(p, "data", Raw(
                '{"score":%s}' % rng.choice(["NaN", "Infinity", "-Infinity"])))), eid
        if cat == "required":
            key = rng.choice(["event_id", "entity_id", "kind", "occurred_at"])
            how = rng.randint(0, 6)
            if how == 0:
                q = self.drop(p, key)
            else:
                q = self.replace(p, key, [None, 123, 1.5, ["x"], {"a": "b"}, True][how - 1])
            return self.render(q), (eid if key != "event_id" else None)
        if cat == "source":
            return self.render(self.replace(p, "source", rng.choice(
                [12315, True, ["12315"], {"s": "x"}, 0]))), eid
        if cat == "data":
            return self.render(self.replace(p, "data", rng.choice(
                ["{}", [1], 3, True, "class=A", []]))), eid
        if cat == "event_id":
            bad_id = rng.choice(["", "x" * 257, "号" * 257, "ev-" + "y" * 254])
            return self.render(self.replace(p, "event_id", bad_id)), None
        if cat == "kind":
            return self.render(self.replace(p, "kind", rng.choice(
                ["Penalty", "penalties", "address-change", "", "complaint ", "PROFILE",
                 "unknown", "Classification", "negative sentiment"]))), eid
        if cat == "code":
            good = self.entity()
            k = rng.randint(0, 7)
            if k == 0:
                bad = good.lower()
                if bad == good:
                    bad = good[:17] + "?"
            elif k == 1:
                wrong = [c for c in CODE_CHARS if c != good[17]]
                bad = good[:17] + rng.choice(wrong)
            elif k == 2:
                bad = good[:17]
            elif k == 3:
                bad = good + "0"
            elif k == 4:  # forbidden letter, check char recomputed
                s = good[:8] + rng.choice("IOSVZ") + good[9:17]
                vals = [CODE_CHARS.index(c) if c in CODE_CHARS else 18 for c in s]
                bad = s + CODE_CHARS[(31 - sum(v * w for v, w in zip(vals, CODE_WEIGHTS)) % 31) % 31]
            elif k == 5:  # full-width digits
                bad = good.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})
            elif k == 6:
                bad = " " + good[:17]
            else:  # one lower-case letter, rest fine
                i = next((i for i, c in enumerate(good) if c.isalpha()), None)
                bad = good[:i] + good[i].lower() + good[i + 1:] if i is not None else ""
            return self.render(self.replace(p, "entity_id", bad)), eid
        if cat == "time":
            t = self.cursor
            good = self.fmt_time(t, plain=True)  # YYYY-MM-DDTHH:MM:SSZ
            y, mo = good[:4], good[5:7]
            bad = rng.choice([
                good[:-1],                                   # missing offset
                "2023-02-29T00:00:00Z", "1900-02-29T12:00:00Z", "2100-02-29T00:00:00+08:00",
                "0001-02-29T00:00:00Z",
                good[:17] + "60Z", good[:14] + "60" + good[16:], good[:11] + "24" + good[13:],
                good[:-1] + "+24:00", good[:-1] + "+08:60", good[:-1] + "+0800",
                good[:-1] + "+08", good[:-1] + "-24:00",
                good.replace("T", " "), good[:10], good[:16] + "Z",
                y + "-13" + good[7:], y + "-00" + good[7:], good[:8] + "00" + good[10:],
                good[:8] + "32" + good[10:], y + "-04-31" + good[10:],
                good + " ", " " + good, good[:-1] + ",5Z", good[:-1] + ".Z",
                good[:-1] + " Z", "1" + good, "+00" + good, "-" + good[1:],
                good.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"}),
                good.translate({ord(c): ord(c) - ord("0") + 0x0660 for c in "0123456789"}),
                good[:-1] + "UTC", good.replace("-", "/"), good + "\n",
                y + "-" + mo + "-1" + good[10:], good[:-1] + "+8:00",
            ])
            return self.render(self.replace(p, "occurred_at", bad)), eid
        if cat == "class":
            q = self.replace(p, "kind", "classification")
            k = rng.randint(0, 11)
            if k == 0:
                q = self.drop(q, "data")
            elif k == 1:
                q = self.replace(q, "data", None)
            else:
                q = self.replace(q, "data", {"class": ["a", "E", 1, None, "AB", " A", ["A"],
                                                       "", "Ａ"][k - 2]}
                                 if k < 11 else {"klass": "A"})
            return self.render(q), eid
        # gray
        k = rng.randint(0, 3)
        if k == 0:
            where = rng.choice(["event_id", "data"])
            if where == "event_id":
                return self.render(self.replace(p, "event_id", Raw('"ev-\\ud800-x"'))), None
            return self.render(self.replace(p, "data", Raw('{"s":"\\udc00"}'))), eid
        if k == 1:
            return self.render(self.replace(p, "data", Raw(
                '{"n":%s}' % rng.choice(["1e400", "-1e400", "1" + "0" * 400])))), eid
        if k == 2:
            depth = rng.choice([127, 128, 200])
            return self.render(self.replace(p, "data", Raw(
                '{"d":' + "[" * (depth - 2) + "]" * (depth - 2) + "}"))), eid
        return b"\xef\xbb\xbf" + self.render(p), eid

    def sc_bad(self, reuse=False):
        line, eid = self.bad_line()
        self.emit(line)
        if reuse and eid:
            self.reuse_ids.append(eid)

    # -- main --------------------------------------------------------------
    def run(self, far_future):
        rng = self.rng
        scenarios = [
            (30, self.sc_single), (10, self.sc_burst), (4, self.sc_boundary_now),
            (1.2, self.sc_surge_drop), (5, self.sc_classification), (6, self.sc_late),
            (2, self.sc_profile), (3, self.sc_dup_exact), (3, self.sc_dup_diff),
            (40, self.sc_bad), (4, lambda: self.sc_bad(reuse=True)),
            (3, lambda: self.sc_advance(DAY, 10 * DAY)),
            (0.5, lambda: self.sc_advance(31 * DAY, 400 * DAY)),
            (0.08, lambda: self.sc_advance(1096 * DAY, 1500 * DAY)),
            (0.05, self.sc_exact_length), (0.3, self.sc_extreme_years),
            (0.5, lambda: setattr(self, "hot", rng.sample(self.entities, min(3, len(self.entities))))),
        ]
        total = sum(w for w, _ in scenarios)
        # make sure the rare fixed cases show up at least once
        self.sc_single()
        self.sc_exact_length()
        self.sc_extreme_years()
        while not self.full():
            x = rng.random() * total
            for w, f in scenarios:
                x -= w
                if x < 0:
                    f()
                    break
        lines = self.lines[:self.n_lines]
        if far_future and lines:
            lines[-1] = self.render(self.pairs(self.new_id(), self.hot[0], "complaint", 0,
                                               time_text="9999-12-31T23:59:59Z"))
        return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--lines", type=int, required=True)
    ap.add_argument("--entities", type=int, default=10)
    ap.add_argument("--gray", action="store_true")
    ap.add_argument("--far-future", choices=["yes", "no", "auto"], default="auto")
    a = ap.parse_args()
    far = a.far_future == "yes" or (a.far_future == "auto" and a.seed % 3 == 2)
    g = Gen(a.seed, a.lines, a.entities, a.gray)
    lines = g.run(far)
    out = b"\n".join(lines)
    # odd seeds: no newline after the last line (it is still a line)
    if lines and (a.seed % 2 == 0 or lines[-1] == b""):
        out += b"\n"
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
