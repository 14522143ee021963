#!/usr/bin/env bash
# Installs Garage (an S3-compatible object store, a crates.io package) for the
# tests of remote archives (crates/remote, the CLI's s3:// tests), which start a
# one-node server on 127.0.0.1. Idempotent: does nothing when `garage` is on PATH
# or GARAGE_BIN names it. A build from source takes ~25 minutes on 2 busy cores,
# so a machine keeps the installed binary (in cargo's bin directory, on PATH).
#
#   scripts/install-garage.sh
set -Eeuo pipefail

VERSION=2.5.0

if [[ -n "${GARAGE_BIN:-}" ]]; then
    if [[ -x "$GARAGE_BIN" ]]; then
        echo "garage: using GARAGE_BIN=$GARAGE_BIN" >&2
        exit 0
    fi
    echo "garage: GARAGE_BIN=$GARAGE_BIN is not an executable file" >&2
    exit 1
fi
if command -v garage >/dev/null 2>&1; then
    echo "garage: using $(command -v garage)" >&2
    exit 0
fi
echo "garage: not on PATH; building garage $VERSION from crates.io (cargo install, ~25 min)" >&2
# The tests need a working server, not a fast one: optimise less, so the build
# spends less time in LLVM.
CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install garage --locked --version "$VERSION"
command -v garage >/dev/null 2>&1 || {
    echo "garage: installed, but cargo's bin directory is not on PATH" >&2
    exit 1
}
