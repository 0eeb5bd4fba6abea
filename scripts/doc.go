// Package scripts holds the deployment scripts (bash) and, in its tests, the
// checks that run them: --help, --dry-run, real runs under a --prefix
// directory, idempotence, the KMS key policy, bad flags and shellcheck.
//
// The tests need bash, GNU coreutils, jq (kms-policy.sh) and shellcheck. When
// the CI environment variable is set, a missing jq or shellcheck fails the
// tests instead of skipping them. See docs/deploy.md for the scripts.
package scripts
