#!/usr/bin/env bash
# Prints podwatch's performance figures. Each is a ratio against a baseline
# measured in the same run (the machine is shared and noisy); as root the
# scrape bench also reads a real kernel map.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
cargo bench --quiet -p podwatch --bench scrape --bench sinks 2>&1 | grep -v "^warning: podwatch@"
