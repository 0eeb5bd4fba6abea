package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/agentkeys/broker/host/client"
)

type credsOptions struct {
	format   string // credential_process, env or json
	duration int64
	region   string
	proof    string // creds: where to write the log proof, if anywhere
}

// mintCreds loads the session and mints AWS credentials, or reports why not.
func (c *cli) mintCreds(ctx context.Context, o credsOptions) (*client.AWSCredentials, int) {
	if !validRegion(o.region) {
		return nil, c.usageError(fmt.Sprintf("--region %q: want an AWS region name such as us-east-1", o.region))
	}
	s, code := c.loadSession()
	if s == nil {
		return nil, code
	}
	cl, code := c.newClient()
	if cl == nil {
		return nil, code
	}
	cr, err := cl.MintAWSCreds(ctx, s.Token, o.duration)
	if err != nil {
		return nil, c.brokerError(err)
	}
	return cr, 0
}

// creds prints AWS credentials: for the AWS CLI/SDK credential_process setting
// (the default), as shell export lines, or as JSON. Nothing secret goes to stderr.
func (c *cli) creds(ctx context.Context, o credsOptions) int {
	switch o.format {
	case "credential_process", "env", "json":
	default:
		return c.usageError(fmt.Sprintf("--format %q: want credential_process, env or json", o.format))
	}
	cr, code := c.mintCreds(ctx, o)
	if cr == nil {
		return code
	}
	if code := c.writeProof(o.proof, cr.LogProof); code != 0 {
		return code
	}
	var out string
	switch o.format {
	case "credential_process":
		// https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html
		b, _ := json.Marshal(map[string]any{
			"Version": 1, "AccessKeyId": cr.AccessKeyID, "SecretAccessKey": cr.SecretAccessKey,
			"SessionToken": cr.SessionToken, "Expiration": cr.Expiration.UTC().Format(time.RFC3339),
		})
		out = string(b)
	case "env":
		lines := []string{
			"export AWS_ACCESS_KEY_ID='" + cr.AccessKeyID + "'",
			"export AWS_SECRET_ACCESS_KEY='" + cr.SecretAccessKey + "'",
			"export AWS_SESSION_TOKEN='" + cr.SessionToken + "'",
		}
		if o.region != "" {
			lines = append(lines, "export AWS_REGION='"+o.region+"'")
		}
		out = strings.Join(lines, "\n")
	case "json":
		b, _ := json.Marshal(map[string]any{
			"access_key_id": cr.AccessKeyID, "secret_access_key": cr.SecretAccessKey, "session_token": cr.SessionToken,
			"expiration": cr.Expiration.Unix(), "wallet": cr.Wallet,
		})
		out = string(b)
	}
	if _, err := fmt.Fprintln(c.stdout, out); err != nil {
		return c.fail(fmt.Errorf("failed to write the output: %w", err), "")
	}
	return 0
}

// execCmd runs argv with fresh AWS credentials in its environment, and exits
// with its status.
func (c *cli) execCmd(ctx context.Context, o credsOptions, argv []string) int {
	cr, code := c.mintCreds(ctx, o)
	if cr == nil {
		return code
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return c.fail(fmt.Errorf("cannot run %q: %w", argv[0], err), "")
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.stdout, c.stderr
	env := make([]string, 0, len(os.Environ())+4)
	for _, kv := range os.Environ() {
		// Drop inherited AWS credentials so the command cannot mix identities.
		switch strings.SplitN(kv, "=", 2)[0] {
		case "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "AWS_ACCESS_KEY_ID="+cr.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+cr.SecretAccessKey, "AWS_SESSION_TOKEN="+cr.SessionToken)
	if o.region != "" {
		env = append(env, "AWS_REGION="+o.region)
	}
	cmd.Env = env
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() >= 0 {
			return ee.ExitCode()
		}
		return c.fail(fmt.Errorf("running %s: %w", argv[0], err), "")
	}
	return 0
}

// validRegion keeps the region safe to print in a shell line.
func validRegion(r string) bool {
	for i := 0; i < len(r); i++ {
		if !('a' <= r[i] && r[i] <= 'z' || '0' <= r[i] && r[i] <= '9' || r[i] == '-') {
			return false
		}
	}
	return true
}
