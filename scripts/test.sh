#!/usr/bin/env bash
# The whole test suite: installs the real clients and servers, then runs every test with them
# required (no skips).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh
export CHMURA_REQUIRE_TOOLS=1
cargo test --workspace --all-targets
