#!/usr/bin/env bash
# Install what handy-colab needs on a fresh Debian machine, into ./.venv.
#   scripts/setup.sh          runtime: OpenSSH, rsync, python venv + the package
#   scripts/setup.sh test     also what the test suite needs (iproute2, iptables, pytest, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-run}
pkgs=(openssh-server openssh-client rsync python3 python3-venv python3-pip ca-certificates)
if [ "$want" = test ]; then
  pkgs+=(iproute2 iptables procps socat netcat-openbsd tinyproxy coturn)
  # README.md's install step is run as written (tests/e2e/test_readme_blocks.py): pipx.
  pkgs+=(pipx)
  # The notebook block's browser test: Debian's chromium, driven by playwright-core (npm).
  pkgs+=(chromium)
  # Node from Debian only where there is none: Debian's npm conflicts with NodeSource's nodejs.
  command -v npm >/dev/null || pkgs+=(nodejs npm)
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
elif ! command -v ssh >/dev/null; then
  echo "setup: not root (or no apt-get): install openssh-client/openssh-server yourself" >&2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$want" = test ]; then
  # build and twine: the wheel test builds and checks what a release would publish.
  .venv/bin/python -m pip install -q -e '.[test]' build twine
  # The non-root e2e tests run the runtime as a normal user, who cannot execute a Python
  # under /root (pyenv): give them the system Python with the runtime's dependencies.
  if [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then
    nr=/opt/handy-colab-test/nonroot-venv
    [ -x "$nr/bin/python" ] || /usr/bin/python3 -m venv "$nr"
    "$nr/bin/python" -m pip install -q --disable-pip-version-check "asyncssh>=2.14" "cryptography>=41" "websockets>=15" "tqdm>=4.66"
    chmod -R a+rX /opt/handy-colab-test
  fi
  # playwright-core for tests/browser, exactly as the lock file pins it; the stamp skips
  # `npm ci` (which starts from an empty node_modules) when that lock is installed already.
  if command -v npm >/dev/null; then
    lock=tests/browser/package-lock.json stamp=tests/browser/node_modules/.handy-colab-lock
    if ! cmp -s "$lock" "$stamp"; then
      (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
      cp "$lock" "$stamp"
    fi
  else
    echo "setup: the browser test needs node and npm (tests/browser: npm ci)" >&2
  fi
  # Real peers for the cloudflared route's tests: cloudflared (pinned, from its Go module)
  # and cfedge, the stand-in for Cloudflare's edge and quick-tunnel API.
  if [ "$(id -u)" = 0 ] && command -v go >/dev/null; then
    bash scripts/build-test-peers.sh /opt/handy-colab-test/bin
  else
    echo "setup: the cloudflared tests need root and Go to build their peers (tests/peers):" \
      "run scripts/build-test-peers.sh [DIR] and set HANDY_COLAB_TEST_BIN=DIR" >&2
  fi
else
  .venv/bin/python -m pip install -q -e .
fi
