#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on a loopback port for the outcome-log tests and prints the
# URL to export as TRIAGE_TEST_POSTGRES_URL. Installs PostgreSQL with apt-get when it is
# missing (CI runs as root). The cluster lives in a temporary directory and is stopped by
# `scripts/ci-postgres.sh stop DIR` (DIR is written to $TRIAGE_PG_DIR_FILE when that is set), or
# when the machine goes away.
#
#   export TRIAGE_TEST_POSTGRES_URL="$(bash scripts/ci-postgres.sh)"
set -euo pipefail

port="${TRIAGE_PG_PORT:-55432}"
find_bin() {
    command -v "$1" 2>/dev/null && return
    ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# `ci-postgres.sh stop DIR` stops a cluster this script started.
if [[ "${1:-}" == "stop" ]]; then
    [[ -d "${2:-}/data" ]] && as_owner "$(find_bin pg_ctl)" -D "$2/data" stop -m fast >&2
    exit 0
fi
# A port already taken (another cluster, an earlier run) moves us to the next free one.
while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
done
if [[ -z "$(find_bin initdb)" ]]; then
    echo "installing postgresql" >&2
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
initdb="$(find_bin initdb)"
pg_ctl="$(find_bin pg_ctl)"

# PostgreSQL refuses to run as root: use the `postgres` user when we are root.
user="$(id -un)"
run=()
if [[ "$(id -u)" == 0 ]]; then
    user=postgres
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"
    run=(runuser -u "$user" --)
fi
dir="$(mktemp -d /tmp/triage-pg.XXXXXX)"
chown "$user" "$dir"
"${run[@]}" "$initdb" -D "$dir/data" -U triage -A trust --no-sync >&2
"${run[@]}" "$pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
# Where the cluster is, for `ci-postgres.sh stop DIR`.
[[ -n "${TRIAGE_PG_DIR_FILE:-}" ]] && echo "$dir" >"$TRIAGE_PG_DIR_FILE"
echo "postgres://triage@127.0.0.1:$port/postgres"
