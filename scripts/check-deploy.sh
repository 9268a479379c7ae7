#!/usr/bin/env bash
# Checks the operations files under deploy/: the Prometheus alerting rules and their unit tests (promtool),
# the systemd unit's hardening (systemd-analyze security, exposure at most 2.0), the Grafana dashboard
# (valid JSON, every panel with a data source and queries) and that every metric name they use is one the
# daemon exports (the catalog below). Prints one summary line; exits non-zero on the first failure.
#
# Usage: scripts/check-deploy.sh        (from anywhere; takes seconds once promtool is installed)
#
# Installs Debian's `prometheus` package (for /usr/bin/promtool) only when promtool is missing, and the
# `systemd` package only when systemd-analyze is missing (as root, or through sudo).
set -euo pipefail

cd "$(dirname "$0")/.."

RULES=deploy/prometheus/credit-sentinel.rules.yml
TESTS=deploy/prometheus/credit-sentinel.test.yml
UNIT=deploy/systemd/credit-sentinel.service
DASHBOARD=deploy/grafana/credit-sentinel.json
RUNBOOKS=deploy/runbooks
MAX_EXPOSURE=2.0

# The metrics the daemon exports (README "Metrics and health"; the operations issue's catalog). Histograms
# are listed by base name; their _bucket, _sum and _count series are accepted. Prometheus' `up` is allowed too.
CATALOG="
credit_sentinel_build_info
credit_sentinel_ready
credit_sentinel_lines_total
credit_sentinel_events_total
credit_sentinel_rejected_lines_total
credit_sentinel_limit_hits_total
credit_sentinel_tokio_tasks
credit_sentinel_late_events_total
credit_sentinel_last_event_timestamp_seconds
credit_sentinel_alerts_total
credit_sentinel_regional_alerts_total
credit_sentinel_entities
credit_sentinel_state_bytes
credit_sentinel_partitions
credit_sentinel_consumer_lag
credit_sentinel_alert_latency_seconds
credit_sentinel_checkpoints_total
credit_sentinel_last_checkpoint_timestamp_seconds
credit_sentinel_checkpoint_duration_seconds
credit_sentinel_rule_reloads_total
credit_sentinel_notifications_total
credit_sentinel_notices_total
credit_sentinel_notices_waiting
credit_sentinel_outbox_messages
credit_sentinel_outbox_oldest_age_seconds
credit_sentinel_region_entities
credit_sentinel_domain_entities
"
HISTOGRAMS="credit_sentinel_alert_latency_seconds credit_sentinel_checkpoint_duration_seconds"

fail() {
    echo "check-deploy: FAILED: $*" >&2
    exit 1
}

# Runs apt-get as root (directly, or through sudo).
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || fail "$1 is missing and not running as root: install the package '$2'"
        sudo=(sudo)
    fi
    echo "check-deploy: $1 not found, installing the Debian package '$2'..." >&2
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null; then
        "${sudo[@]}" apt-get update >/dev/null
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null
    fi
    command -v "$1" >/dev/null || fail "$1 still missing after installing '$2'"
}

command -v promtool >/dev/null || apt_install promtool prometheus
command -v systemd-analyze >/dev/null || apt_install systemd-analyze systemd
command -v python3 >/dev/null || fail "python3 is needed to check the dashboard"

# --- Prometheus rules and their unit tests --------------------------------------------------------------
out=$(promtool check rules "$RULES" 2>&1) || { echo "$out" >&2; fail "promtool check rules $RULES"; }
nrules=$(sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p' <<<"$out")
out=$(promtool test rules "$TESTS" 2>&1) || { echo "$out" >&2; fail "promtool test rules $TESTS"; }

# --- systemd unit hardening --------------------------------------------------------------------------------
# --offline=yes (systemd >= 250) judges the file itself, not a loaded unit. --threshold=N (systemd >= 250)
# makes the command fail above N/10; without it, the figure is parsed and compared here.
threshold=$(python3 -c "print(round(float('$MAX_EXPOSURE') * 10))")
if systemd-analyze security --help 2>/dev/null | grep -q -- '--threshold'; then
    out=$(systemd-analyze security --offline=yes --threshold="$threshold" "$UNIT" 2>&1) \
        || { grep -v '✓' <<<"$out" >&2; fail "systemd-analyze security: exposure above $MAX_EXPOSURE (or the unit did not parse)"; }
else
    out=$(systemd-analyze security --offline=yes "$UNIT" 2>&1) || { echo "$out" >&2; fail "systemd-analyze security $UNIT"; }
fi
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$exposure" ] || { echo "$out" >&2; fail "no 'Overall exposure level' in the systemd-analyze output"; }
python3 -c "import sys; sys.exit(0 if float('$exposure') <= float('$MAX_EXPOSURE') else 1)" \
    || fail "systemd-analyze security: exposure $exposure above $MAX_EXPOSURE"

# --- Dashboard, metric names, runbooks ---------------------------------------------------------------------
dash_summary=$(CATALOG="$CATALOG" HISTOGRAMS="$HISTOGRAMS" python3 - "$DASHBOARD" "$RULES" "$TESTS" "$RUNBOOKS" <<'PY'
import json, os, re, sys

dashboard, rules, tests, runbooks = sys.argv[1:5]
errors = []
catalog = set(os.environ["CATALOG"].split())
for h in os.environ["HISTOGRAMS"].split():
    catalog |= {h + "_bucket", h + "_sum", h + "_count"}
metric = re.compile(r"\bcredit_sentinel_[a-z0-9_]+")

try:
    with open(dashboard, encoding="utf-8") as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    print(f"{dashboard}: not valid JSON: {e}", file=sys.stderr)
    sys.exit(1)

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
    errors.append(f"{dashboard}: no templating variable `datasource` of type datasource (prometheus)")
if "instance" not in variables:
    errors.append(f"{dashboard}: no templating variable `instance`")
if not any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])):
    errors.append(f"{dashboard}: no DS_PROMETHEUS input")

exprs = []
count = 0
for p in panels(dash.get("panels", [])):
    if p.get("type") == "row":
        continue
    count += 1
    where = f"{dashboard}: panel {p.get('id')} {p.get('title')!r}"
    if not p.get("datasource"):
        errors.append(f"{where}: no datasource")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{where}: no targets")
    for t in targets:
        if not t.get("expr"):
            errors.append(f"{where}: target {t.get('refId')} has no expr")
        exprs.append(t.get("expr", ""))
for v in variables.values():
    q = v.get("query")
    exprs.append(q.get("query", "") if isinstance(q, dict) else str(q or ""))

used = {}
for name in metric.findall("\n".join(exprs)):
    used.setdefault(name, set()).add(dashboard)
for path in (rules, tests):
    with open(path, encoding="utf-8") as f:
        for name in metric.findall(f.read()):
            used.setdefault(name, set()).add(path)
for name in sorted(set(used) - catalog):
    errors.append(f"{', '.join(sorted(used[name]))}: metric {name} is not in the catalog")

with open(rules, encoding="utf-8") as f:
    text = f.read()
alerts = re.findall(r"^\s*- alert:\s*(\S+)", text, re.M)
for a in alerts:
    if not os.path.isfile(os.path.join(runbooks, a + ".md")):
        errors.append(f"{runbooks}/{a}.md: no runbook for alert {a}")
    if f"runbooks/{a}.md" not in text:
        errors.append(f"{rules}: alert {a} has no runbook_url ending in runbooks/{a}.md")
if len(re.findall(r"^\s+severity:", text, re.M)) != len(alerts):
    errors.append(f"{rules}: every alert needs a severity label")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"{count} panels, {len(used)} metric names in catalog, {len(alerts)} runbooks")
PY
) || fail "dashboard / metric names / runbooks (see above)"

echo "check-deploy: OK: ${nrules:-?} rules checked, rule tests passed, systemd exposure ${exposure} (<= ${MAX_EXPOSURE}), dashboard ${dash_summary}"
