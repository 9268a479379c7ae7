#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` (installed from crates.io when missing) and checks it: the
# files it installs, the unit and conffiles, and that the installed binary accepts the installed
# configuration and rules (run from an extracted copy: nothing is installed on this machine).
# Usage: scripts/package.sh            (prints the path of the .deb)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb > /dev/null || cargo install cargo-deb --locked --version 3.8.0
cargo deb --locked > /dev/null
deb=$(ls -t target/debian/credit-sentinel_*.deb | head -n 1)

contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/credit-sentinel ./etc/credit-sentinel/config.toml ./etc/credit-sentinel/alert-rules/default.toml \
  ./etc/credit-sentinel/alert-rules/food/food.toml ./etc/credit-sentinel/alert-rules/drug/drug.toml \
  ./etc/credit-sentinel/alert-rules/special_equipment/special_equipment.toml \
  ./usr/lib/systemd/system/credit-sentinel.service ./usr/share/doc/credit-sentinel/config.example.toml \
  ./usr/share/credit-sentinel/prometheus/credit-sentinel.rules.yml ./usr/share/credit-sentinel/grafana/credit-sentinel.json \
  ./usr/share/doc/credit-sentinel/runbooks/README.md; do
  grep -q " $f\$" <<< "$contents" || { echo "package: $f missing from $deb" >&2; exit 1; }
done
dpkg-deb --info "$deb" conffiles | grep -q /etc/credit-sentinel/config.toml \
  || { echo "package: /etc/credit-sentinel/config.toml is not a conffile" >&2; exit 1; }

# The installed binary, configuration and rules work together (paths moved under the extraction root).
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb --extract "$deb" "$root"
sed "s|/etc/credit-sentinel|$root/etc/credit-sentinel|" "$root/etc/credit-sentinel/config.toml" > "$root/config.toml"
"$root/usr/bin/credit-sentinel" check-config "$root/config.toml" > /dev/null
"$root/usr/bin/credit-sentinel" check-rules "$root/etc/credit-sentinel/alert-rules" > /dev/null
# The domain sets are installed disabled: the installed default alert stream is SPEC's.
"$root/usr/bin/credit-sentinel" check-rules "$root/etc/credit-sentinel/alert-rules" | grep -q "(5 active)" \
  || { echo "package: the installed rules should have 5 active (the domain sets disabled)" >&2; exit 1; }
echo "package: $deb ($(du -h "$deb" | cut -f1)) checked"
