#!/usr/bin/env bash
# Build everything, run the Rust tests, then the end-to-end tests against the
# freshly built coordinator. Extra arguments are passed to pytest, e.g.
#   tests/run-all.sh -k lifecycle
#   tests/run-all.sh -m "not slow"
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    step "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
step "installing tests/requirements.txt"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# The agent links against libvirt, and the lab tests run real guests: as root
# on Debian, install the hypervisor stack (a no-op once installed), start the
# daemons and build the guest image. Elsewhere the lab tests are skipped.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "lab: packages, libvirt daemons, guest image"
    bash tests/lab/install-deps.sh
    bash tests/lab/start-libvirt.sh
    # Built once, and again whenever its recipe changed.
    recipe=$(sha256sum <tests/lab/build-guest.sh | cut -d' ' -f1)
    if [ ! -f tests/lab/out/guest.qcow2 ] ||
        [ "$(cat tests/lab/out/guest.recipe 2>/dev/null)" != "$recipe" ]; then
        bash tests/lab/build-guest.sh
    fi
    step "PostgreSQL for the PostgreSQL store's tests"
    pg_url=$(bash tests/lab/postgres.sh | tail -n 1)
    case "$pg_url" in
        postgres://*) ;;
        *) echo "tests/lab/postgres.sh printed no URL: '$pg_url'" >&2; exit 1 ;;
    esac
    # The Rust store tests run on both engines when this is set.
    export ORRERY_TEST_PG="$pg_url"
    # The CA of the server's TLS certificate, for the TLS tests.
    export ORRERY_TEST_PG_CA=/var/lib/postgresql/orrery-test-tls/ca.crt
else
    echo "not root on Debian: the lab (libvirt, real guests) is skipped" >&2
fi

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "cargo test --workspace"
cargo test --workspace

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$PWD/$target_dir" ;;
esac
export ORRERY_COORDINATOR_BIN="$target_dir/debug/orrery-coordinator"
export ORRERY_AGENT_BIN="$target_dir/debug/orrery-agent"

# The slowest tests are listed after each pass, to keep the suite in time.
step "pytest tests/e2e on the embedded store (coordinator: $ORRERY_COORDINATOR_BIN)"
env -u ORRERY_TEST_PG "$VENV/bin/pytest" -q --durations=20 tests/e2e "$@"

# The same suite with every coordinator's records in PostgreSQL.
if [ -n "${ORRERY_TEST_PG:-}" ]; then
    step "pytest tests/e2e on PostgreSQL"
    "$VENV/bin/pytest" -q --durations=20 tests/e2e "$@"
fi
