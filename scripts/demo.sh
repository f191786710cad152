#!/usr/bin/env bash
# Quickstart: install, then run the whole path locally (relay on loopback) and clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/handy-colab demo
