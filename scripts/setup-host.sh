#!/usr/bin/env bash
# setup-host.sh: prepare an EC2 parent instance to run AgentKeys in a Nitro enclave.
#
# Writes the Nitro Enclaves allocator config, the vsock-proxy allowlist (KMS and STS
# of one region), systemd units for the enclave, the host and one vsock-proxy per
# remote, the host's environment file, and the host's state directory; creates the
# agentkeys system user. Idempotent: a file is rewritten only when its content or
# mode differs, so a second run with the same flags changes nothing.
# Not run on Nitro hardware by its authors: see docs/deploy.md.
set -euo pipefail

prog=setup-host.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<'EOF'
Usage: setup-host.sh [flags]

Prepares this EC2 instance (the enclave's parent) for AgentKeys in nitro mode.
On a terminal it asks for what is missing; with --non-interactive every
required value must be a flag. Run it again with the same flags: nothing changes.

Required:
  --region REGION       AWS region of KMS and STS, e.g. us-east-1
  --issuer URL          OIDC issuer URL (https://...), BROKER_OIDC_ISSUER

Optional (default in brackets):
  --domain NAME         DNS name the host serves HTTPS for, BROKER_TLS_DOMAIN
                        [the issuer's host name]
  --cpu-count N         vCPUs for enclaves (allocator.yaml cpu_count) [2]
  --memory-mib N        MiB for enclaves (allocator.yaml memory_mib) [2048]
  --enclave-cid N       the enclave's vsock CID [16]
  --enclave-port N      vsock port the enclave serves on [5005]
  --eif-path PATH       enclave image file [/opt/agentkeys/agentkeys-enclave.eif]
  --host-bin PATH       agentkeys-host binary [/usr/local/bin/agentkeys-host]
  --kms-proxy-port N    local vsock port of the KMS vsock-proxy [8000]
  --sts-proxy-port N    local vsock port of the STS vsock-proxy [8001]
  --prefix DIR          write under DIR instead of / (tests, image builds); user
                        creation, chown and systemctl are then skipped
  --non-interactive     never prompt
  --dry-run             print what would be done; write nothing
  -h, --help            this help

Files (under --prefix):
  /etc/nitro_enclaves/allocator.yaml                   memory_mib, cpu_count
  /etc/nitro_enclaves/vsock-proxy.yaml                 allowlist: kms. and sts.REGION:443
  /etc/agentkeys/host.env                              BROKER_* for agentkeys-host (0640)
  /etc/systemd/system/agentkeys-enclave.service        runs run-enclave.sh
  /etc/systemd/system/agentkeys-host.service           agentkeys-host, user agentkeys
  /etc/systemd/system/agentkeys-vsock-proxy-kms.service
  /etc/systemd/system/agentkeys-vsock-proxy-sts.service
  /usr/local/lib/agentkeys/run-enclave.sh              copy of scripts/run-enclave.sh
  /var/lib/agentkeys-host/                             host state (0700, agentkeys)
Local host settings go in /etc/agentkeys/host.local.env, which this script never touches.

Exit status: 0 done, 1 failed, 2 bad flags.
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
bad() { echo "$prog: $*" >&2; echo "$prog: see $prog --help" >&2; exit 2; }

region='' issuer='' domain=''
cpu_count=2 memory_mib=2048 cid=16 enclave_port=5005
eif_path=/opt/agentkeys/agentkeys-enclave.eif host_bin=/usr/local/bin/agentkeys-host
kms_port=8000 sts_port=8001
prefix='' non_interactive=false dry_run=false

while [ $# -gt 0 ]; do
  flag=$1
  case $flag in
    -h | --help) usage; exit 0 ;;
    --non-interactive) non_interactive=true; shift; continue ;;
    --dry-run) dry_run=true; shift; continue ;;
    --region | --issuer | --domain | --cpu-count | --memory-mib | --enclave-cid | --enclave-port | \
      --eif-path | --host-bin | --kms-proxy-port | --sts-proxy-port | --prefix)
      [ $# -ge 2 ] || bad "flag $flag needs a value"
      val=$2; shift 2 ;;
    --*=*) bad "write flags as '--flag value', not '$flag'" ;;
    *) bad "unknown flag $flag" ;;
  esac
  case $flag in
    --region) region=$val ;;
    --issuer) issuer=$val ;;
    --domain) domain=$val ;;
    --cpu-count) cpu_count=$val ;;
    --memory-mib) memory_mib=$val ;;
    --enclave-cid) cid=$val ;;
    --enclave-port) enclave_port=$val ;;
    --eif-path) eif_path=$val ;;
    --host-bin) host_bin=$val ;;
    --kms-proxy-port) kms_port=$val ;;
    --sts-proxy-port) sts_port=$val ;;
    --prefix) prefix=$val ;;
  esac
done

interactive=false
if ! $non_interactive && [ -t 0 ] && [ -t 2 ]; then
  interactive=true
fi

# ask VAR PROMPT: on a terminal, read VAR when it is empty.
ask() {
  local var=$1 prompt=$2 def=${3:-} reply
  [ -n "${!var}" ] && return 0
  $interactive || return 0
  if [ -n "$def" ]; then
    read -r -p "$prompt [$def]: " reply
    reply=${reply:-$def}
  else
    read -r -p "$prompt: " reply
  fi
  printf -v "$var" '%s' "$reply"
}

ask region "AWS region (e.g. us-east-1)"
ask issuer "OIDC issuer URL (https://...)"

[ -n "$region" ] || bad "flag --region is required (e.g. --region us-east-1)"
[ -n "$issuer" ] || bad "flag --issuer is required (e.g. --issuer https://issuer.example.com)"
[[ $region =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || bad "flag --region: '$region' is not an AWS region name such as us-east-1"
[[ $issuer =~ ^https://([a-z0-9.-]+)(:[0-9]+)?(/[^?#[:space:]]*)?$ ]] ||
  bad "flag --issuer: '$issuer' must be an https:// URL without query or fragment (lower-case host)"
issuer_host=${BASH_REMATCH[1]}
ask domain "DNS name for HTTPS" "$issuer_host"
domain=${domain:-$issuer_host}
[[ $domain =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$ ]] ||
  bad "flag --domain: '$domain' is not a lower-case DNS name"

# number FLAG VALUE MIN MAX
number() {
  if ! [[ $2 =~ ^[0-9]{1,10}$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
    bad "flag $1: '$2' is not a whole number from $3 to $4"
  fi
}
number --cpu-count "$cpu_count" 1 1024
number --memory-mib "$memory_mib" 64 16777216
number --enclave-cid "$cid" 4 4294967294 # 0-2 are reserved, 3 is this instance
number --enclave-port "$enclave_port" 1 4294967295
number --kms-proxy-port "$kms_port" 1 65535
number --sts-proxy-port "$sts_port" 1 65535
[ "$kms_port" != "$sts_port" ] || bad "flags --kms-proxy-port and --sts-proxy-port must differ"
for p in "$eif_path" "$host_bin"; do
  [[ $p == /* && $p != *[[:space:]]* ]] || bad "paths must be absolute and without spaces: '$p'"
done
if [ -n "$prefix" ]; then
  [[ $prefix == /* ]] || bad "flag --prefix: '$prefix' must be an absolute path"
  prefix=${prefix%/}
fi
[ -f "$here/run-enclave.sh" ] || die "run-enclave.sh not found next to $prog (in $here)"

suffix=amazonaws.com
[[ $region == cn-* ]] && suffix=amazonaws.com.cn
kms_host=kms.$region.$suffix
sts_host=sts.$region.$suffix
state_dir=/var/lib/agentkeys-host
lib_dir=/usr/local/lib/agentkeys
unit_dir=/etc/systemd/system
user=agentkeys

if $interactive; then
  cat >&2 <<EOF
$prog will set up: region $region (KMS $kms_host, STS $sts_host), issuer $issuer,
domain $domain, enclave $cpu_count vCPUs and $memory_mib MiB at CID $cid, under ${prefix:-/}.
EOF
  read -r -p "Proceed? [y/N] " reply
  [[ $reply == [yY]* ]] || { echo "$prog: nothing done" >&2; exit 1; }
fi

changed_units=false
changed_allocator=false

say() { echo "$*"; }

# put MODE PATH: write stdin to PREFIX/PATH when content or mode differ.
put() {
  local mode=$1 rel=$2 path content
  path=$prefix$rel
  content=$(cat; printf x)
  content=${content%x}
  if [ -f "$path" ] && cmp -s "$path" <(printf '%s' "$content") &&
    [ "$(stat -c %a "$path")" = "${mode#0}" ]; then
    say "unchanged $rel"
    return 0
  fi
  case $rel in
    "$unit_dir"/*) changed_units=true ;;
    */allocator.yaml) changed_allocator=true ;;
  esac
  if $dry_run; then
    say "would write $rel (mode $mode)"
    return 0
  fi
  mkdir -p "$(dirname "$path")"
  local tmp
  tmp=$(mktemp "$path.XXXXXX")
  printf '%s' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
  say "wrote $rel (mode $mode)"
}

# dir MODE PATH: make PREFIX/PATH a directory with this mode.
dir() {
  local mode=$1 rel=$2 path
  path=$prefix$rel
  if [ -d "$path" ] && [ "$(stat -c %a "$path")" = "${mode#0}" ]; then
    say "unchanged $rel/"
    return 0
  fi
  if $dry_run; then
    say "would create $rel/ (mode $mode)"
    return 0
  fi
  mkdir -p "$path"
  chmod "$mode" "$path"
  say "created $rel/ (mode $mode)"
}

# system CMD...: change the running system (never under --prefix).
system() {
  if [ -n "$prefix" ]; then
    say "skipped (--prefix): $*"
  elif $dry_run; then
    say "would run: $*"
  else
    say "running: $*"
    "$@"
  fi
}

if [ -z "$prefix" ] && ! $dry_run && [ "$(id -u)" -ne 0 ]; then
  die "run as root (or use --prefix DIR or --dry-run)"
fi
if [ -n "$prefix" ] && ! $dry_run; then
  mkdir -p "$prefix"
fi

# 1. The system user, before anything is chowned to it.
if [ -z "$prefix" ] && id -u "$user" >/dev/null 2>&1; then
  say "unchanged user $user"
else
  system useradd --system --user-group --no-create-home --home-dir "$state_dir" \
    --shell /usr/sbin/nologin "$user"
fi

# 2. Nitro Enclaves allocator: memory and CPUs taken from the instance for enclaves.
put 0644 /etc/nitro_enclaves/allocator.yaml <<EOF
---
# Written by AgentKeys scripts/setup-host.sh; rerun it to change these.
# Memory (MiB) and vCPUs the Nitro Enclaves allocator reserves for enclaves.
memory_mib: $memory_mib
cpu_count: $cpu_count
EOF

# 3. vsock-proxy allowlist: the only remotes the enclave can reach.
put 0644 /etc/nitro_enclaves/vsock-proxy.yaml <<EOF
# Written by AgentKeys scripts/setup-host.sh: the remotes vsock-proxy may forward to.
allowlist:
- {address: $kms_host, port: 443}
- {address: $sts_host, port: 443}
EOF

# 4. One vsock-proxy unit per remote.
proxy_unit() {
  local name=$1 port=$2 host=$3
  put 0644 "$unit_dir/agentkeys-vsock-proxy-$name.service" <<EOF
# Written by AgentKeys scripts/setup-host.sh.
[Unit]
Description=AgentKeys vsock-proxy to ${name^^} ($host:443, vsock port $port)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/vsock-proxy $port $host 443 --config /etc/nitro_enclaves/vsock-proxy.yaml
Restart=always
RestartSec=2
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
EOF
}
proxy_unit kms "$kms_port" "$kms_host"
proxy_unit sts "$sts_port" "$sts_host"

# 5. The enclave: run-enclave.sh starts it and returns; nitro-cli stops it.
put 0755 "$lib_dir/run-enclave.sh" <"$here/run-enclave.sh"
put 0644 "$unit_dir/agentkeys-enclave.service" <<EOF
# Written by AgentKeys scripts/setup-host.sh.
[Unit]
Description=AgentKeys enclave (Nitro, CID $cid)
Requires=nitro-enclaves-allocator.service
After=nitro-enclaves-allocator.service agentkeys-vsock-proxy-kms.service agentkeys-vsock-proxy-sts.service
Wants=agentkeys-vsock-proxy-kms.service agentkeys-vsock-proxy-sts.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$lib_dir/run-enclave.sh --non-interactive --eif-path $eif_path --cpu-count $cpu_count --memory $memory_mib --enclave-cid $cid --enclave-name agentkeys
ExecStop=/usr/bin/nitro-cli terminate-enclave --enclave-name agentkeys
TimeoutStartSec=300

[Install]
WantedBy=multi-user.target
EOF

# 6. The host: unprivileged, its state in one directory, settings from files.
put 0640 /etc/agentkeys/host.env <<EOF
# Written by AgentKeys scripts/setup-host.sh; rerun it to change these. Put other
# BROKER_* settings (see agentkeys-host -h) in /etc/agentkeys/host.local.env.
BROKER_OIDC_ISSUER=$issuer
BROKER_TLS_DOMAIN=$domain
BROKER_ENCLAVE=vsock:$cid:$enclave_port
BROKER_STATE_DIR=$state_dir
BROKER_AWS_REGION=$region
EOF
put 0644 "$unit_dir/agentkeys-host.service" <<EOF
# Written by AgentKeys scripts/setup-host.sh.
[Unit]
Description=AgentKeys host (HTTP API, audit log, STS) for the enclave at CID $cid
After=network-online.target agentkeys-enclave.service
Wants=network-online.target
Requires=agentkeys-enclave.service

[Service]
User=$user
Group=$user
EnvironmentFile=/etc/agentkeys/host.env
EnvironmentFile=-/etc/agentkeys/host.local.env
ExecStart=$host_bin
Restart=on-failure
RestartSec=5
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=$state_dir
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_VSOCK
UMask=0077

[Install]
WantedBy=multi-user.target
EOF
dir 0700 "$state_dir"
system chown "$user:$user" "$state_dir"
system chown "root:$user" /etc/agentkeys/host.env

# 7. systemd.
if $changed_units; then
  system systemctl daemon-reload
fi
system systemctl enable nitro-enclaves-allocator.service agentkeys-vsock-proxy-kms.service \
  agentkeys-vsock-proxy-sts.service agentkeys-enclave.service agentkeys-host.service
if $changed_allocator; then
  # The allocator reads its file when it starts; it cannot resize under a running enclave.
  system systemctl restart nitro-enclaves-allocator.service
fi

if [ -z "$prefix" ] && ! $dry_run; then
  [ -x "$host_bin" ] || echo "$prog: warning: $host_bin is missing; install agentkeys-host there" >&2
  [ -f "$eif_path" ] || echo "$prog: warning: $eif_path is missing; build the enclave image (eif/)" >&2
fi
if $dry_run; then
  say "dry run: nothing was written"
else
  say "done; start with: systemctl start agentkeys-host.service (it starts the enclave and the proxies)"
fi
