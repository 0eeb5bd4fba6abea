#!/usr/bin/env bash
# kms-policy.sh: print the KMS key policy that releases the AgentKeys seed only to
# an attested enclave built from one image.
#
# Condition keys, as documented by AWS ("Condition keys for Nitro Enclaves", AWS KMS
# Developer Guide, https://docs.aws.amazon.com/kms/latest/developerguide/conditions-nitro-enclave.html):
#   kms:RecipientAttestation:ImageSha384  String, single-valued; "corresponds to PCR0 in
#     the attestation document"; applies to Decrypt, DeriveSharedSecret, GenerateDataKey,
#     GenerateDataKeyPair and GenerateRandom; "effective only when the Recipient parameter
#     in the request specifies a signed attestation document". AWS's example compares it
#     with StringEqualsIgnoreCase.
#   kms:RecipientAttestation:PCR<PCR_ID>  the same for one PCR: "Concatenate the PCR ID to the
#     condition key name. The PCR value must be a lower-case hexadecimal string of up to 96
#     bytes" (same guide, earlier page "AWS KMS condition keys for AWS Nitro Enclaves",
#     conditions-nitro-enclaves.md in the awsdocs/aws-kms-developer-guide repository, whose
#     examples also use StringEqualsIgnoreCase). PCR1 kernel, PCR2 application, PCR8 signing
#     certificate. This script writes lower-case values.
# A request without a Recipient has no such key in its context, hence the explicit
# Deny on {"Null": {"kms:RecipientAttestation:ImageSha384": "true"}}: if the key policy
# also lets IAM policies grant access (the default "Enable IAM User Permissions"
# statement), an unconditional kms:Decrypt in the instance role's IAM policy would
# otherwise open the seed to any process on the host, and an explicit Deny beats
# every Allow.
# Not tried against AWS by its authors: see docs/deploy.md.
set -euo pipefail

prog=kms-policy.sh

usage() {
  cat <<'EOF'
Usage: kms-policy.sh --measurements FILE --role-arn ARN --admin-arn ARN [flags]

Prints (or writes, with --output) the key policy for the KMS key that seals the
AgentKeys seed. FILE is the JSON that `nitro-cli build-enclave` or
`nitro-cli describe-eif` prints:
  {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "<96 hex>", ...}}

Flags:
  --measurements FILE   enclave image measurements (required; repeat it to allow
                        several images, e.g. the old and the new during an upgrade)
  --role-arn ARN        the EC2 instance role (arn:aws:iam::ACCOUNT:role/NAME) the
                        host's calls to KMS are signed with (required)
  --admin-arn ARN       who administers the key: describe, rotate, change the policy,
                        schedule deletion; never decrypt (required)
  --pcrs LIST           PCRs to pin, comma-separated, from 0,1,2,8 [0]; PCR0 is
                        kms:RecipientAttestation:ImageSha384, the others
                        kms:RecipientAttestation:PCR<N>
  --output FILE         write the policy to FILE instead of stdout (only if it differs)
  --non-interactive     never prompt
  --dry-run             with --output: say whether FILE would change; write nothing
  -h, --help            this help

Statements: KeyAdministration (admin), EnclaveSeedWithAttestation (Allow
kms:Decrypt and kms:GenerateDataKey to the role only for the pinned PCRs),
DenyWithoutAttestation (Deny those, and Encrypt/ReEncrypt, to everyone when the
request carries no attestation), DenyOtherPCR<N> (Deny when a pinned PCR differs).

Needs jq. Exit status: 0 done, 1 failed, 2 bad flags.
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
bad() { echo "$prog: $*" >&2; echo "$prog: see $prog --help" >&2; exit 2; }

measurements=()
role_arn='' admin_arn='' pcrs=0 output=''
non_interactive=false dry_run=false

while [ $# -gt 0 ]; do
  flag=$1
  case $flag in
    -h | --help) usage; exit 0 ;;
    --non-interactive) non_interactive=true; shift; continue ;;
    --dry-run) dry_run=true; shift; continue ;;
    --measurements | --role-arn | --admin-arn | --pcrs | --output)
      [ $# -ge 2 ] || bad "flag $flag needs a value"
      val=$2; shift 2 ;;
    --*=*) bad "write flags as '--flag value', not '$flag'" ;;
    *) bad "unknown flag $flag" ;;
  esac
  case $flag in
    --measurements) measurements+=("$val") ;;
    --role-arn) role_arn=$val ;;
    --admin-arn) admin_arn=$val ;;
    --pcrs) pcrs=$val ;;
    --output) output=$val ;;
  esac
done

if ! $non_interactive && [ -t 0 ] && [ -t 2 ]; then
  [ ${#measurements[@]} -gt 0 ] || { read -r -p "Measurements file (from nitro-cli build-enclave): " m; measurements=("$m"); }
  [ -n "$role_arn" ] || read -r -p "Instance role ARN (arn:aws:iam::ACCOUNT:role/NAME): " role_arn
  [ -n "$admin_arn" ] || read -r -p "Key administrator ARN: " admin_arn
fi

[ ${#measurements[@]} -gt 0 ] || bad "flag --measurements is required"
[ -n "$role_arn" ] || bad "flag --role-arn is required"
[ -n "$admin_arn" ] || bad "flag --admin-arn is required"
arn_re='^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:'
[[ $role_arn =~ ${arn_re}role/[A-Za-z0-9+=,.@_/-]+$ ]] ||
  bad "flag --role-arn: '$role_arn' is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME; not the instance profile)"
[[ $admin_arn =~ ${arn_re}(root|(role|user)/[A-Za-z0-9+=,.@_/-]+)$ ]] ||
  bad "flag --admin-arn: '$admin_arn' is not an IAM role, user or account-root ARN"
[[ $pcrs =~ ^[0-9]+(,[0-9]+)*$ ]] || bad "flag --pcrs: '$pcrs' is not a comma-separated list such as 0,1,2"
IFS=, read -r -a pcr_list <<<"$pcrs"
has0=false
for p in "${pcr_list[@]}"; do
  case $p in
    0) has0=true ;;
    1 | 2 | 8) ;;
    *) bad "flag --pcrs: PCR $p is not in a measurements file (0, 1, 2 or 8)" ;;
  esac
done
$has0 || bad "flag --pcrs must include 0 (the image, kms:RecipientAttestation:ImageSha384)"
[ -z "$output" ] && $dry_run && bad "flag --dry-run only means something with --output"

command -v jq >/dev/null || die "jq not found; install it (dnf install -y jq, or apt-get install -y jq)"

# values: {"0": ["<pcr0 of file 1>", ...], "1": [...]} from every measurements file.
values='{}'
for f in "${measurements[@]}"; do
  [ -f "$f" ] || die "measurements file $f not found"
  # Error messages name the file; values are checked in jq so that odd JSON cannot
  # reach the shell.
  if ! one=$(jq -ce --arg pcrs "$pcrs" '
      def want: $pcrs | split(",");
      if (.Measurements | type) != "object" then error("no \"Measurements\" object")
      elif (.Measurements.HashAlgorithm | type) != "string" or (.Measurements.HashAlgorithm | startswith("Sha384") | not)
        then error("HashAlgorithm is not Sha384")
      else .Measurements as $m | [want[] as $p |
        ($m["PCR" + $p]) as $v |
        if ($v | type) != "string" then error("no PCR\($p)")
        elif ($v | test("^[0-9a-fA-F]{96}$") | not) then error("PCR\($p) is not 96 hex digits")
        elif ($v | test("^0+$")) then error("PCR\($p) is all zeros (a debug-mode image); KMS must never trust it")
        else {key: $p, value: [$v | ascii_downcase]} end] | from_entries end
    ' "$f" 2>&1); then
    die "measurements file $f: ${one#jq: error (at *): }"
  fi
  values=$(jq -cn --argjson a "$values" --argjson b "$one" \
    '$a * ($b | with_entries(.value = (($a[.key] // []) + .value | unique)))')
done

policy=$(jq -n --arg role "$role_arn" --arg admin "$admin_arn" --argjson v "$values" '
  def key($p): if $p == "0" then "kms:RecipientAttestation:ImageSha384" else "kms:RecipientAttestation:PCR\($p)" end;
  def pinned: $v | keys_unsorted | sort_by(tonumber);
  {
    Version: "2012-10-17",
    Id: "agentkeys-enclave-seed",
    Statement: ([
      {
        Sid: "KeyAdministration",
        Effect: "Allow",
        Principal: {AWS: $admin},
        Action: ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
                 "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
                 "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
                 "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand"],
        Resource: "*"
      },
      {
        Sid: "EnclaveSeedWithAttestation",
        Effect: "Allow",
        Principal: {AWS: $role},
        Action: ["kms:Decrypt", "kms:GenerateDataKey"],
        Resource: "*",
        Condition: {StringEqualsIgnoreCase: (pinned | map({key: key(.), value: $v[.]}) | from_entries)}
      },
      {
        Sid: "DenyWithoutAttestation",
        Effect: "Deny",
        Principal: {AWS: "*"},
        Action: ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                 "kms:GenerateDataKeyPair", "kms:GenerateDataKeyPairWithoutPlaintext",
                 "kms:Encrypt", "kms:ReEncrypt*"],
        Resource: "*",
        Condition: {Null: {"kms:RecipientAttestation:ImageSha384": "true"}}
      }
    ] + (pinned | map(. as $p | {
        Sid: "DenyOtherPCR\($p)",
        Effect: "Deny",
        Principal: {AWS: "*"},
        Action: ["kms:Decrypt", "kms:GenerateDataKey"],
        Resource: "*",
        Condition: {StringNotEqualsIgnoreCase: {(key($p)): $v[$p]}}
      })))
  }')

if [ -z "$output" ]; then
  printf '%s\n' "$policy"
  exit 0
fi
if [ -f "$output" ] && cmp -s "$output" <(printf '%s\n' "$policy"); then
  echo "unchanged $output"
elif $dry_run; then
  echo "would write $output"
else
  tmp=$(mktemp "$output.XXXXXX")
  printf '%s\n' "$policy" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$output"
  echo "wrote $output"
fi
