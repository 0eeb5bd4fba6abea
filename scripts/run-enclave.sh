#!/usr/bin/env bash
# run-enclave.sh: start the AgentKeys enclave image with nitro-cli.
#
# Idempotent: when an enclave with the same name already runs, it says so and exits 0.
# agentkeys-enclave.service (written by setup-host.sh) runs it at boot.
# Not run on Nitro hardware by its authors: see docs/deploy.md.
set -euo pipefail

prog=run-enclave.sh

usage() {
  cat <<'EOF'
Usage: run-enclave.sh [flags]

Starts the enclave:
  nitro-cli run-enclave --eif-path EIF --cpu-count N --memory MIB --enclave-cid CID --enclave-name NAME

Flags (default in brackets):
  --eif-path PATH       enclave image file [/opt/agentkeys/agentkeys-enclave.eif]
  --cpu-count N         vCPUs [2]
  --memory MIB          memory in MiB [2048]
  --enclave-cid N       vsock CID; agentkeys-host dials it (BROKER_ENCLAVE) [16]
  --enclave-name NAME   name for nitro-cli describe/terminate [agentkeys]
  --debug-mode          start a DEBUG enclave (console readable by the host). Its
                        attestation documents carry all-zero PCRs, so KMS refuses
                        to release the seed to it and auditors reject it. For
                        development only.
  --non-interactive     never prompt (a debug enclave starts after the warning)
  --dry-run             print the nitro-cli command; run nothing
  -h, --help            this help

Exit status: 0 running, 1 failed, 2 bad flags.
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
bad() { echo "$prog: $*" >&2; echo "$prog: see $prog --help" >&2; exit 2; }

eif_path=/opt/agentkeys/agentkeys-enclave.eif
cpu_count=2 memory=2048 cid=16 name=agentkeys
debug=false non_interactive=false dry_run=false

while [ $# -gt 0 ]; do
  flag=$1
  case $flag in
    -h | --help) usage; exit 0 ;;
    --debug-mode) debug=true; shift; continue ;;
    --non-interactive) non_interactive=true; shift; continue ;;
    --dry-run) dry_run=true; shift; continue ;;
    --eif-path | --cpu-count | --memory | --enclave-cid | --enclave-name)
      [ $# -ge 2 ] || bad "flag $flag needs a value"
      val=$2; shift 2 ;;
    --*=*) bad "write flags as '--flag value', not '$flag'" ;;
    *) bad "unknown flag $flag" ;;
  esac
  case $flag in
    --eif-path) eif_path=$val ;;
    --cpu-count) cpu_count=$val ;;
    --memory) memory=$val ;;
    --enclave-cid) cid=$val ;;
    --enclave-name) name=$val ;;
  esac
done

number() {
  if ! [[ $2 =~ ^[0-9]{1,10}$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
    bad "flag $1: '$2' is not a whole number from $3 to $4"
  fi
}
number --cpu-count "$cpu_count" 1 1024
number --memory "$memory" 64 16777216
number --enclave-cid "$cid" 4 4294967294 # 0-2 are reserved, 3 is the parent instance
[[ $name =~ ^[A-Za-z0-9._-]{1,64}$ ]] || bad "flag --enclave-name: '$name' must be 1-64 letters, digits, '.', '_' or '-'"
[ -n "$eif_path" ] || bad "flag --eif-path must not be empty"

cmd=(nitro-cli run-enclave --eif-path "$eif_path" --cpu-count "$cpu_count" --memory "$memory"
  --enclave-cid "$cid" --enclave-name "$name")

if $debug; then
  cmd+=(--debug-mode)
  cat >&2 <<'EOF'
################################################################################
run-enclave.sh: WARNING: DEBUG MODE
  A debug enclave's attestation documents carry ALL-ZERO PCRs. AWS KMS will
  refuse to release the sealed seed to it (the key policy pins PCR0), and
  agentkeys-attest rejects its documents. The host can read its console.
  Never use a debug enclave for anything but development.
################################################################################
EOF
  if ! $non_interactive && ! $dry_run && [ -t 0 ] && [ -t 2 ]; then
    read -r -p "Type 'debug' to start a debug enclave: " reply
    [ "$reply" = debug ] || die "not started"
  fi
fi

# show PREFIX: print the command, quoted for a shell.
show() {
  printf '%s' "$1"
  printf ' %q' "${cmd[@]}"
  printf '\n'
}

if $dry_run; then
  show "would run:"
  [ -f "$eif_path" ] || echo "$prog: note: $eif_path does not exist here" >&2
  exit 0
fi

command -v nitro-cli >/dev/null || die "nitro-cli not found; install aws-nitro-enclaves-cli (dnf install aws-nitro-enclaves-cli)"
[ -f "$eif_path" ] || die "enclave image $eif_path not found; build it (eif/) or pass --eif-path"

# Already running under this name? Then there is nothing to do.
if nitro-cli describe-enclaves 2>/dev/null | grep -Eq "\"EnclaveName\": *\"${name//./\\.}\""; then
  echo "$prog: enclave $name is already running"
  exit 0
fi

show "running:"
exec "${cmd[@]}"
