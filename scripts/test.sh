#!/usr/bin/env bash
# Runs every check and test of gitbroker on a Debian machine. Installs what
# the tests need when it is missing: redis-server (the Redis store tests
# start their own servers on free loopback ports), Chromium with
# chromedriver (the end-to-end browser tests), promtool (from Debian's
# prometheus package: the metrics lint), and python3 with venv (schemathesis,
# from PyPI into target/py, fuzzes the APIs against their OpenAPI description).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# `promtool check metrics` lints the broker's /metrics (tests/metrics.rs)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# schemathesis (scripts/schemathesis.sh) runs from a venv under target/py
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# the WebDriver client loads the system CA bundle
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# a bare toolchain may lack the formatter and the linter
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "test.sh: cargo test"
# unit, integration and browser tests (clippy above already built the benchmark)
cargo test
echo "test.sh: schemathesis against a live broker"
scripts/schemathesis.sh
