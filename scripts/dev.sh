#!/usr/bin/env bash
# make dev: a simulated enclave and the host on loopback, state in .agentkeys-dev/.
# Honours BROKER_* variables (BROKER_PORT, BROKER_OIDC_ISSUER, …); AGENTKEYS_DEV_DIR
# moves the state directory. Runs until Ctrl-C, then stops both processes.
#
# AGENTKEYS_ISSUER_ORIGIN=enclave serves the issuer origin from the enclave, as
# in production: the issuer is https://localhost:$AGENTKEYS_ISSUER_ORIGIN_PORT
# (default 8443), relayed by the host to the enclave's origin socket, and the
# API is http://127.0.0.1:$BROKER_PORT. Without an ACME CA the enclave serves a
# SELF-SIGNED certificate for its derived key: DEVELOPMENT ONLY, no relying party
# (AWS included) trusts it.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=${AGENTKEYS_DEV_DIR:-.agentkeys-dev}
bin=${BIN:-bin}
port=${BROKER_PORT:-8091}
origin=${AGENTKEYS_ISSUER_ORIGIN:-host}
origin_port=${AGENTKEYS_ISSUER_ORIGIN_PORT:-8443}
api=http://127.0.0.1:$port
case "$origin" in
host) issuer=${BROKER_OIDC_ISSUER:-$api}; api=$issuer ;;
enclave) issuer=${BROKER_OIDC_ISSUER:-https://localhost:$origin_port} ;;
*) echo "agentkeys dev: AGENTKEYS_ISSUER_ORIGIN must be host or enclave, not $origin" >&2; exit 2 ;;
esac

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
{"issuer": "$issuer", "api_url": "$api"}
JSON

sock="$dev/enclave.sock"
origin_sock="$dev/origin.sock"
enclave_origin=(--issuer-origin host)
host_origin=(BROKER_ISSUER_ORIGIN=host)
if [ "$origin" = enclave ]; then
  enclave_origin=(--issuer-origin enclave --origin-listen "unix:$origin_sock")
  host_origin=(BROKER_ISSUER_ORIGIN=enclave BROKER_API_URL="$api" BROKER_ISSUER_ORIGIN_PORT="$origin_port"
    BROKER_ENCLAVE_ORIGIN="unix:$origin_sock")
fi
"$bin/agentkeys-enclave" --simulated --state-dir "$dev/enclave" --policy "$dev/policy.json" \
  --listen "unix:$sock" "${enclave_origin[@]}" 2>"$dev/enclave.log" &
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

env BROKER_OIDC_ISSUER="$issuer" BROKER_PORT="$port" BROKER_ENCLAVE="unix:$sock" \
  BROKER_STATE_DIR="${BROKER_STATE_DIR:-$dev/host}" "${host_origin[@]}" \
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

curl=curl
if [ "$origin" = enclave ]; then
  # DEVELOPMENT ONLY: the enclave's self-signed certificate. -k is the honest
  # flag here; in production the certificate comes from a public CA by ACME.
  curl="curl -k"
  echo "agentkeys dev: the issuer origin is served by the enclave with a SELF-SIGNED certificate (development only)"
fi
cat <<MSG
agentkeys dev: ready — issuer $issuer, API $api (simulated enclave; issuer origin served by the $origin; state and logs in $dev/). Try:
  $curl $issuer/.well-known/openid-configuration
  $curl $issuer/.well-known/jwks.json
  $bin/agentkeys --broker $api --wallet $dev/wallet.json --session $dev/session.json wallet new
  $bin/agentkeys --broker $api --wallet $dev/wallet.json --session $dev/session.json login
  $bin/agentkeys --broker $api --wallet $dev/wallet.json --session $dev/session.json jwt
  open $api/ in a browser: the transparency page (keys, PCRs, the audit log's checkpoint)
Press Ctrl-C to stop.
MSG
# Wait for either process to exit (or for Ctrl-C).
wait -n "$enclave" "$host" || true
echo "agentkeys dev: a process exited; see $dev/enclave.log and $dev/host.log" >&2
exit 1
