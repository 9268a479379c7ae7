#!/usr/bin/env python3
"""Self-test of the reference: hand-made cases, unit checks, and a cross-check
of ref_replay.py against the structurally different naive_replay.py on
generated hostile streams.

Usage: python3 selftest.py [--quick]      (exit 0 when everything passes)
"""

import glob
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep tests/reference free of __pycache__

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_replay as R  # noqa: E402

FIELDS = ("entity_id", "rule", "action", "previous_action", "at", "value",
          "threshold", "class", "evidence")
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL " + msg)


def run(script, args, stdin=None):
    p = subprocess.run([sys.executable, os.path.join(HERE, script)] + args,
                       input=stdin, capture_output=True)
    if p.returncode != 0:
        fail("%s %s exited %d: %s" % (script, args, p.returncode, p.stderr.decode()[-500:]))
    return p.stdout


def alerts(text):
    return [{f: a.get(f) for f in FIELDS}
            for a in (json.loads(l) for l in text.decode().splitlines() if l.strip())]


def unit():
    # check characters
    assert R.valid_code("91350100M000100Y43")
    assert not R.valid_code("91350100M000100Y44")
    assert not R.valid_code("91350100m000100Y43")
    assert not R.valid_code("91350100M000100Y4")
    assert not R.valid_code("91350100I000100Y43")
    # thresholds (hand computed: max(1, ceil(base * f)))
    assert R.EFFECTIVE["A"][0] == (4, 6, 8, 12)
    assert R.EFFECTIVE["B"][0] == (3, 5, 6, 9)
    assert R.EFFECTIVE["B"][1] == (3, 5, 8, 12)
    assert R.EFFECTIVE["B"][3] == (8, 15, 30, 60)
    assert R.EFFECTIVE["D"][0] == (1, 2, 2, 3)
    assert R.EFFECTIVE["D"][1] == (1, 2, 3, 4)
    assert R.EFFECTIVE["D"][2] == (2, 3, 5, 10)
    assert R.EFFECTIVE["D"][4] == (1, 2, 3, 5)
    assert R.EFFECTIVE[None] == R.EFFECTIVE["C"]
    assert R.level_of(2, (1, 2, 2, 3)) == 3  # shared threshold: the higher action
    # times
    P = R.parse_time
    assert P("1970-01-01T00:00:00Z") == 0
    assert P("1970-01-01T08:00:00+08:00") == 0
    assert P("1969-12-31T18:30:00-05:30") == 0
    assert P("1970-01-01t00:00:00.999z") == 0
    assert P("1970-01-01T00:00:00-00:00") == 0
    assert P("2024-02-29T00:00:00Z") is not None
    assert P("2000-02-29T00:00:00Z") is not None
    assert P("0000-02-29T00:00:00Z") == -62162121600  # 0001-01-01 is -62135596800, year 0 leap
    for bad in ["2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2025-01-01T00:00:60Z",
                "2025-01-01T24:00:00Z", "2025-01-01T00:60:00Z", "2025-01-01T00:00:00+24:00",
                "2025-01-01T00:00:00+08:60", "2025-01-01T00:00:00", "2025-01-01 00:00:00Z",
                "2025-01-01T00:00:00+0800", "2025-01-01T00:00Z", "2025-13-01T00:00:00Z",
                "2025-04-31T00:00:00Z", "2025-01-00T00:00:00Z", "2025-01-01T00:00:00.Z",
                "2025-01-01T00:00:00Z ", "２０２５-01-01T00:00:00Z", "2025-01-01T00:00:00Z\n",
                "12025-01-01T00:00:00Z", "2025-01-01T00:00:00,5Z", "\u0662025-01-01T00:00:00Z"]:
        assert P(bad) is None, bad
    assert R.format_utc(P("9999-12-31T23:59:59-23:59")) == "10000-01-01T23:58:59Z"
    assert R.format_utc(P("0000-01-01T00:00:00+00:01")) == "-0001-12-31T23:59:00Z"
    # line splitting
    assert R.split_lines(b"") == []
    assert R.split_lines(b"a") == [b"a"]
    assert R.split_lines(b"a\n") == [b"a"]
    assert R.split_lines(b"a\n\n") == [b"a", b""]
    assert R.split_lines(b"\n") == [b""]
    # JSON strictness
    base = '{"event_id":"e","entity_id":"91350100M000100Y43","kind":"profile","occurred_at":"2025-01-01T00:00:00Z"%s}'
    assert R.parse_line((base % "").encode()).kind == "profile"
    assert R.parse_line((base % ',"source":null,"data":null,"extra":[1,{"a":null}]').encode())
    for tail in [',"data":{"a":NaN}', ',"data":{"a":1,"a":1}', ',"data":[]', ',"source":1',
                 ',"kind":"profile"', ',"\\u006bind":"profile"', ',"data":{"a":"\\ud800"}',
                 ',"data":{"a":1e400}']:
        try:
            R.parse_line((base % tail).encode())
            raise AssertionError("accepted: " + tail)
        except R.Bad:
            pass
    print("ok   unit checks")


def cases():
    for path in sorted(glob.glob(os.path.join(HERE, "cases", "*.jsonl"))):
        if path.endswith(".expected.jsonl"):
            continue
        name = os.path.basename(path)[:-len(".jsonl")]
        args_file = os.path.join(HERE, "cases", name + ".args")
        args = open(args_file).read().split() if os.path.exists(args_file) else []
        with open(os.path.join(HERE, "cases", name + ".expected.jsonl"), "rb") as f:
            expected = alerts(f.read())
        got = alerts(run("ref_replay.py", args + [path]))
        if got != expected:
            fail("case %s" % name)
            for i in range(max(len(got), len(expected))):
                g = got[i] if i < len(got) else None
                e = expected[i] if i < len(expected) else None
                if g != e:
                    print("   expected: %s\n   got:      %s" % (e, g))
        else:
            print("ok   case %s (%d alerts)" % (name, len(expected)))
        # the same input on stdin gives the same result
        with open(path, "rb") as f:
            if alerts(run("ref_replay.py", args + ["-"], stdin=f.read())) != got:
                fail("case %s via stdin" % name)


def cross(quick):
    seeds = [11, 12] if quick else [11, 12, 13, 14, 15, 16]
    for seed in seeds:
        gen_args = ["--seed", str(seed), "--lines", "3000" if quick else "8000",
                    "--entities", str(3 + seed % 5)]
        if seed % 2:
            gen_args.append("--gray")
        stream = run("hostile_gen.py", gen_args)
        again = run("hostile_gen.py", gen_args)
        if stream != again:
            fail("hostile_gen.py not deterministic for %s" % gen_args)
        tmp = os.path.join("/tmp", "ref_selftest_%d_%d.jsonl" % (os.getpid(), seed))
        with open(tmp, "wb") as f:
            f.write(stream)
        n_lines = len(R.split_lines(stream))
        if n_lines != int(gen_args[3]):
            fail("hostile_gen.py wrote %d lines, asked %s" % (n_lines, gen_args[3]))
        last = None
        for raw in R.split_lines(stream):
            try:
                t = R.parse_line(raw).t
            except R.Bad:
                continue
            last = t if last is None else max(last, t)
        untils = [[], ["--until", R.format_utc(last - 400 * R.DAY)]]
        if last + 200 * R.DAY < R.parse_time("9999-12-31T23:59:59Z"):
            untils.append(["--until", R.format_utc(last + 200 * R.DAY)])
        for extra in untils:
            a = run("ref_replay.py", extra + [tmp])
            b = run("naive_replay.py", extra + [tmp])
            if a != b:
                fail("ref vs naive differ on %s %s" % (gen_args, extra))
            else:
                print("ok   cross-check %s %s (%d alerts)" % (" ".join(gen_args), " ".join(extra),
                                                            a.count(b"\n")))
        os.unlink(tmp)


def main():
    quick = "--quick" in sys.argv
    try:
        unit()
    except AssertionError as e:
        fail("unit checks: %s" % e)
    cases()
    cross(quick)
    print("FAILED: %d" % failures if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
