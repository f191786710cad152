#!/usr/bin/env bash
# Build the test peers of the cloudflared route from tests/peers (one Go module):
#   cloudflared  the real cloudflared, at the version pinned in tests/peers/go.mod
#   cfedge       the local stand-in for Cloudflare's edge and quick-tunnel API
# and of the frp route from tests/peers/frp (a separate Go module; needs Go >= 1.25):
#   frps, frpc   the real frp, at the version pinned in tests/peers/frp/go.mod
# Usage: scripts/build-test-peers.sh [OUTDIR]     (default /opt/handy-colab-test/bin)
# A binary is rebuilt only when it is missing or its stamp (a hash of go.mod, go.sum and,
# for cfedge, its sources) changed. Prints one line per binary built. Needs Go >= 1.24
# and the Go module proxy.
set -euo pipefail

CLOUDFLARED_VERSION=2026.3.0 # must match the pseudo-version required in tests/peers/go.mod

out=${1:-/opt/handy-colab-test/bin}
peers=$(cd "$(dirname "$0")/../tests/peers" && pwd)

if ! command -v go >/dev/null; then
  echo "build-test-peers: Go is not installed" >&2
  exit 1
fi
mkdir -p "$out"
cd "$peers"
# Static binaries (they also run as other users and inside test namespaces), and never
# rewrite go.mod/go.sum while building.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly

mod_hash=$(cat go.mod go.sum | sha256sum | cut -d' ' -f1)

# build NAME STAMP PACKAGE [go build args...]
build() {
  local name=$1 stamp=$2 pkg=$3
  shift 3
  local bin=$out/$name stampfile=$out/.$name.stamp
  if [ -x "$bin" ] && [ -f "$stampfile" ] && [ "$(cat "$stampfile")" = "$stamp" ]; then
    return 0
  fi
  local start=$SECONDS tmp
  tmp=$(mktemp "$out/.$name.XXXXXX")
  # Build next to the target and rename, so an interrupted build never leaves a
  # half-written binary that a later run would take as up to date.
  if ! go build -trimpath "$@" -o "$tmp" "$pkg"; then
    rm -f "$tmp"
    echo "build-test-peers: building $name failed" >&2
    return 1
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
  printf '%s\n' "$stamp" >"$stampfile"
  echo "build-test-peers: built $name -> $bin ($((SECONDS - start))s)"
}

build cloudflared "$mod_hash cloudflared $CLOUDFLARED_VERSION" \
  github.com/cloudflare/cloudflared/cmd/cloudflared \
  -ldflags "-s -w -X \"main.Version=$CLOUDFLARED_VERSION\""
if ! "$out/cloudflared" --version | grep -qF "version $CLOUDFLARED_VERSION "; then
  echo "build-test-peers: $out/cloudflared is not version $CLOUDFLARED_VERSION:" \
    "$("$out/cloudflared" --version)" >&2
  exit 1
fi

cfedge_hash=$( (echo "$mod_hash"; cat cfedge/*.go) | sha256sum | cut -d' ' -f1)
build cfedge "$cfedge_hash" ./cfedge -ldflags "-s -w"

# frp: frps and frpc from their own module (tests/peers/frp), without the web dashboard
# (its assets are not in the module zip, hence the noweb tag, which exists from v0.68.0).
FRP_VERSION=0.71.0 # must match github.com/fatedier/frp in tests/peers/frp/go.mod
cd "$peers/frp"
frp_hash=$(cat go.mod go.sum | sha256sum | cut -d' ' -f1)
for frp_bin in frps frpc; do
  build "$frp_bin" "$frp_hash $frp_bin $FRP_VERSION" "github.com/fatedier/frp/cmd/$frp_bin" \
    -tags "$frp_bin,noweb" -ldflags "-s -w"
  if [ "$("$out/$frp_bin" -v)" != "$FRP_VERSION" ]; then
    echo "build-test-peers: $out/$frp_bin is not version $FRP_VERSION:" \
      "$("$out/$frp_bin" -v)" >&2
    exit 1
  fi
done

# sshj-client.jar: sshj, the SSH library JetBrains IDEs bundle, doing what PyCharm's SSH
# interpreter does (tests/peers/sshj, a Maven project; needs Java >= 17, Maven and Maven
# Central). Rebuilt only when the pom or a source changed (the stamp is their hash).
sshj_src=$peers/sshj
sshj_jar=$out/sshj-client.jar
sshj_hash=$(cd "$sshj_src" && find pom.xml src -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1)
if [ -f "$sshj_jar" ] && [ "$(cat "$out/.sshj-client.stamp" 2>/dev/null)" = "$sshj_hash" ]; then
  :
elif ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  # Only the PyCharm tests need it; under CI=true they fail and say that it is missing.
  echo "build-test-peers: no java/mvn: sshj-client.jar (the PyCharm tests) not built" >&2
else
  start=$SECONDS
  # Maven writes target/ beside the pom: build a copy, so the checkout stays clean.
  work=$(mktemp -d)
  cp -r "$sshj_src/pom.xml" "$sshj_src/src" "$work/"
  if ! (cd "$work" && mvn -q -B -Dstyle.color=never package); then
    rm -rf "$work"
    echo "build-test-peers: building sshj-client.jar failed" >&2
    exit 1
  fi
  tmp=$(mktemp "$out/.sshj-client.XXXXXX")
  cp "$work/target/sshj-client.jar" "$tmp"
  rm -rf "$work"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$sshj_jar"
  printf '%s\n' "$sshj_hash" >"$out/.sshj-client.stamp"
  echo "build-test-peers: built sshj-client.jar -> $sshj_jar ($((SECONDS - start))s)"
fi
