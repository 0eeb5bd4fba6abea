package awscreds

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/broker/internal/stsserver"
)

func TestRoleSessionName(t *testing.T) {
	now := time.Unix(1767225600, 0)
	w := "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
	if got := RoleSessionName(w, now); got != "agentkeys-"+w+"-1767225600" || len(got) > 64 {
		t.Fatalf("%q (%d)", got, len(got))
	}
	// A longer timestamp (or prefix) shortens the wallet, never the timestamp.
	far := time.Unix(99999999999, 0)
	got := RoleSessionName(w, far)
	if len(got) != 64 || !strings.HasSuffix(got, "-99999999999") || !strings.HasPrefix(got, "agentkeys-0x5aaeb") {
		t.Fatalf("%q (%d)", got, len(got))
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		data, agent, account, want, err string
	}{
		{"arn:aws:iam::123456789012:role/a", "arn:aws:iam::123456789012:role/b", "", "arn:aws:iam::123456789012:role/a", ""},
		{"", "arn:aws:iam::123456789012:role/b", "999999999999", "arn:aws:iam::123456789012:role/b", ""},
		{"", "", "123456789012", "arn:aws:iam::123456789012:role/agentkeys-data-role", ""},
		{"", "", "", "", "BROKER_DATA_ROLE_ARN"},
		{"", "", "1234", "", "12-digit"},
		{"arn:aws:iam::123:role/a", "", "", "", "not an IAM role ARN"},
		{"arn:aws-us-gov:iam::123456789012:role/path/a", "", "", "arn:aws-us-gov:iam::123456789012:role/path/a", ""},
	}
	for _, tt := range tests {
		got, err := ResolveRoleARN(tt.data, tt.agent, tt.account)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%+v: err %v", tt, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%+v: %q %v", tt, got, err)
		}
	}
	if ResolveRegion("", "") != "us-east-1" || ResolveRegion("", "eu-west-1") != "eu-west-1" || ResolveRegion("us-west-2", "eu-west-1") != "us-west-2" {
		t.Error("ResolveRegion")
	}
}

func TestNewRejects(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []Config{
		{Mode: "magic", RoleARN: "arn:aws:iam::123456789012:role/a"},
		{RoleARN: "role/a"},
		{Mode: ModeAssumeRole, RoleARN: "arn:aws:iam::123456789012:role/a", StaticAccessKeyID: "AKIA"},
	} {
		if _, err := New(ctx, cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestCheckIdentity(t *testing.T) {
	sts := stsserver.New(stsserver.Options{
		Roles:      []stsserver.Role{{ARN: "arn:aws:iam::123456789012:role/a"}},
		AccessKeys: []stsserver.AccessKey{{ID: "AKIAHOSTEXAMPLE00001", Secret: "s3cret", ARN: "arn:aws:iam::123456789012:user/host"}},
	})
	url := sts.Start(t)
	b, err := New(context.Background(), Config{Mode: ModeAssumeRole, RoleARN: "arn:aws:iam::123456789012:role/a", Endpoint: url,
		StaticAccessKeyID: "AKIAHOSTEXAMPLE00001", StaticSecretAccessKey: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if arn, err := b.CheckIdentity(context.Background()); err != nil || arn != "arn:aws:iam::123456789012:user/host" {
		t.Fatalf("CheckIdentity: %q %v", arn, err)
	}
	bad, _ := New(context.Background(), Config{Mode: ModeAssumeRole, RoleARN: "arn:aws:iam::123456789012:role/a", Endpoint: url,
		StaticAccessKeyID: "AKIAHOSTEXAMPLE00001", StaticSecretAccessKey: "wrong"})
	_, err = bad.CheckIdentity(context.Background())
	var serr *STSError
	if !errors.As(err, &serr) || serr.Code != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	// STS unreachable: a clear code and a hint about the endpoint.
	down, _ := New(context.Background(), Config{Mode: ModeWebIdentity, RoleARN: "arn:aws:iam::123456789012:role/a", Endpoint: "http://127.0.0.1:1", Backoff: time.Millisecond})
	_, err = down.WithWebIdentity(context.Background(), "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "a.b.c", time.Hour)
	if !errors.As(err, &serr) || serr.Code != "RequestFailed" || !strings.Contains(serr.Hint, "BROKER_STS_ENDPOINT") {
		t.Fatalf("unreachable: %v", err)
	}
	// What the client may see does not name the endpoint; the log's Err does.
	if shown := serr.Code + serr.Message + serr.Hint; strings.Contains(shown, "127.0.0.1") {
		t.Errorf("the client-facing part names the endpoint: %q", shown)
	}
	if serr.Err == nil || !strings.Contains(serr.Err.Error(), "127.0.0.1:1") || !strings.Contains(serr.Error(), "127.0.0.1:1") {
		t.Errorf("Err = %v, Error() = %q, want the transport error for the log", serr.Err, serr.Error())
	}
}
