#!/usr/bin/env bash
# make dev: a simulated enclave and the host on loopback, state in .agentkeys-dev/.
# Honours BROKER_* variables (BROKER_PORT, BROKER_OIDC_ISSUER, …); AGENTKEYS_DEV_DIR
# moves the state directory. Runs until Ctrl-C, then stops both processes.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=${AGENTKEYS_DEV_DIR:-.agentkeys-dev}
bin=${BIN:-bin}
port=${BROKER_PORT:-8091}
issuer=${BROKER_OIDC_ISSUER:-http://127.0.0.1:$port}

mkdir -p "$dev"
chmod 700 "$dev"

# One instance per state directory: a second one would truncate the running
# one's logs and fight over its socket. The pid file is created atomically
# (noclobber); one whose process is gone is stale and replaced.
pidfile="$dev/dev.pid"
lock() { (set -C; echo $$ >"$pidfile") 2>/dev/null; }
if ! lock; then
  other=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$other" ] && kill -0 "$other" 2>/dev/null; then
    echo "agentkeys dev: already running in $dev (pid $other); stop it first (Ctrl-C where it runs, or kill $other), or set AGENTKEYS_DEV_DIR to another directory" >&2
    exit 1
  fi
  rm -f "$pidfile"
  lock || { echo "agentkeys dev: another instance is starting in $dev; try again" >&2; exit 1; }
fi
trap 'rm -f "$pidfile"' EXIT
# The policy is rewritten each start so that it follows BROKER_OIDC_ISSUER.
cat >"$dev/policy.json" <<JSON
{"issuer": "$issuer"}
JSON

sock="$dev/enclave.sock"
"$bin/agentkeys-enclave" --simulated --state-dir "$dev/enclave" --policy "$dev/policy.json" \
  --listen "unix:$sock" 2>"$dev/enclave.log" &
enclave=$!
host=
stop() {
  trap - INT TERM EXIT
  [ -n "$host" ] && kill -TERM "$host" 2>/dev/null || true
  kill -TERM "$enclave" 2>/dev/null || true
  [ -n "$host" ] && wait "$host" 2>/dev/null || true
  wait "$enclave" 2>/dev/null || true
  rm -f "$pidfile"
  echo "agentkeys dev: stopped (logs in $dev/)"
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

for _ in $(seq 1 200); do
  [ -S "$sock" ] && break
  kill -0 "$enclave" 2>/dev/null || { cat "$dev/enclave.log" >&2; echo "agentkeys dev: the enclave failed to start" >&2; exit 1; }
  sleep 0.05
done
cp "$dev/enclave/simulated-root.pem" "$dev/simulated-root.pem"

BROKER_OIDC_ISSUER="$issuer" BROKER_PORT="$port" BROKER_ENCLAVE="unix:$sock" \
  BROKER_STATE_DIR="${BROKER_STATE_DIR:-$dev/host}" \
  "$bin/agentkeys-host" 2>"$dev/host.log" &
host=$!

# readyz reports whether /readyz answers 200 (the host reaches the enclave).
# Bash alone, so the one path here is the one TestMakeDev runs.
readyz() {
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  local status
  read -r _ status _ <&3 || status=
  exec 3<&-
  [ "$status" = 200 ]
}
ready=
for _ in $(seq 1 200); do
  if readyz; then ready=1; break; fi
  kill -0 "$host" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$ready" ]; then
  cat "$dev/host.log" >&2
  echo "agentkeys dev: the host did not become ready (logs above and in $dev/)" >&2
  exit 1
fi

cat <<MSG
agentkeys dev: ready — issuer $issuer (simulated enclave; state and logs in $dev/). Try:
  curl $issuer/.well-known/openid-configuration
  curl $issuer/.well-known/jwks.json
  $bin/agentkeys --broker $issuer --wallet $dev/wallet.json --session $dev/session.json wallet new
  $bin/agentkeys --broker $issuer --wallet $dev/wallet.json --session $dev/session.json login
  $bin/agentkeys --broker $issuer --wallet $dev/wallet.json --session $dev/session.json jwt
Press Ctrl-C to stop.
MSG
# Wait for either process to exit (or for Ctrl-C).
wait -n "$enclave" "$host" || true
echo "agentkeys dev: a process exited; see $dev/enclave.log and $dev/host.log" >&2
exit 1
