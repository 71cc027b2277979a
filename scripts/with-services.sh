#!/usr/bin/env bash
# Run a command with the system pcscd running; stop it afterwards if we started it.
# (Tests start their own private pcscd, PostgreSQL and Redis instances themselves.)
set -uo pipefail
started_pcscd=""
if ! pgrep -x pcscd >/dev/null 2>&1; then
    mkdir -p /run/pcscd
    pcscd --foreground >/tmp/facehil-pcscd.log 2>&1 &
    started_pcscd=$!
    for _ in $(seq 1 100); do [ -S /run/pcscd/pcscd.comm ] && break; sleep 0.05; done
fi
cleanup() {
    if [ -n "$started_pcscd" ]; then
        kill "$started_pcscd" 2>/dev/null
        wait "$started_pcscd" 2>/dev/null
    fi
}
trap cleanup EXIT INT TERM
"$@"
rc=$?
exit $rc
