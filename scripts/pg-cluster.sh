#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, CI and benchmarks (Debian's packaged server).
#
#   scripts/pg-cluster.sh start DIR [--no-fsync]   create (first time) and start; prints the URL
#   scripts/pg-cluster.sh stop DIR                 stop it (the files stay; rm -rf DIR to forget it)
#   scripts/pg-cluster.sh url DIR                  print the URL of a running cluster
#
# The cluster listens on 127.0.0.1 only, on a free port, with trust authentication and its
# unix socket inside DIR. The URL printed is postgres://ironbridge@127.0.0.1:PORT/ironbridge.
# --no-fsync (tests): fsync and full_page_writes off, durable across a crash of the client or
# of the server process, not of the machine. Without it the server keeps its defaults
# (benchmarks).
#
# initdb refuses to run as root: as root, the cluster belongs to the `postgres` OS user (DIR is
# chown'ed to it, so DIR's parents must be searchable by it, e.g. somewhere under /tmp).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR [--no-fsync] | stop DIR | url DIR" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2
no_fsync=0
for arg in "$@"; do
    case "$arg" in
    --no-fsync) no_fsync=1 ;;
    *) usage ;;
    esac
done

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "no PostgreSQL server found in /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
    exit 1
fi

db_user=ironbridge
db_name=ironbridge

# Runs a command as the cluster's owner (postgres when we are root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local data="$dir/data" sock="$dir/sock"
    if [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        cat "$dir/url"
        return
    fi
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            echo "$dir is not reachable by the postgres user (its parents must be searchable)" >&2
            exit 1
        fi
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        as_owner mkdir -p "$sock"
        as_owner "$bin/initdb" -D "$data" -U "$db_user" --auth=trust --encoding=UTF8 \
            --locale=C >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
    fi
    local opts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$sock"
    if [ "$no_fsync" = 1 ]; then
        opts="$opts -c fsync=off -c full_page_writes=off"
    fi
    local port tries=0
    while :; do
        port=$((20000 + RANDOM % 40000))
        if port_free "$port" &&
            as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
                -o "$opts -p $port" start >/dev/null; then
            break
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 5 ]; then
            echo "could not start PostgreSQL; see $dir/server.log" >&2
            tail -n 20 "$dir/server.log" >&2 || true
            exit 1
        fi
    done
    local url="postgres://$db_user@127.0.0.1:$port/$db_name"
    if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U "$db_user" -d postgres -Atqc \
        "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
        "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$db_user" "$db_name"
    fi
    echo "$url" | as_owner tee "$dir/url" >/dev/null
    echo "$url"
}

stop() {
    local data="$dir/data"
    if [ ! -f "$data/PG_VERSION" ]; then
        echo "no cluster in $dir" >&2
        exit 1
    fi
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

case "$cmd" in
start) start ;;
stop) stop ;;
url) cat "$dir/url" ;;
*) usage ;;
esac
