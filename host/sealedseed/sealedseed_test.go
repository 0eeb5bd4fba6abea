package sealedseed

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/agentkeys/broker/shared/protocol"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func staticCreds(exp time.Time) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIAHOST", SecretAccessKey: "host-secret", SessionToken: "tok",
			CanExpire: !exp.IsZero(), Expires: exp}, nil
	})
}

// fakeEnclave records the unseal and provide_credentials requests it gets
// and answers like seed.Gate.
type fakeEnclave struct {
	blob     []byte
	requests []protocol.UnsealRequest
	provided []protocol.AWSCredentials
	created  bool // what a first unseal answers
}

func (f *fakeEnclave) call(ctx context.Context, op protocol.Op, req, resp any) error {
	switch op {
	case protocol.OpUnseal:
		r := req.(protocol.UnsealRequest)
		f.requests = append(f.requests, r)
		if r.CiphertextBlob == nil {
			*resp.(*protocol.UnsealResponse) = protocol.UnsealResponse{Created: f.created, CiphertextBlob: f.blob, KeyID: "key"}
			return nil
		}
		if !bytes.Equal(r.CiphertextBlob, f.blob) {
			return protocol.Errorf(protocol.CodeInternal, "KMS Decrypt failed")
		}
		*resp.(*protocol.UnsealResponse) = protocol.UnsealResponse{KeyID: "key"}
		return nil
	case protocol.OpProvideCredentials:
		f.provided = append(f.provided, req.(protocol.ProvideCredentialsRequest).Credentials)
		return nil
	}
	return errors.New("unexpected op")
}

func newKeeper(t *testing.T, path string, exp time.Time) *Keeper {
	t.Helper()
	k, err := New(Config{BlobPath: path, Credentials: staticCreds(exp), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestFirstStartThenRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", FileName)
	exp := now.Add(time.Hour)
	enc := &fakeEnclave{blob: []byte("sealed blob"), created: true}
	if err := newKeeper(t, path, exp).Unseal(context.Background(), enc.call); err != nil {
		t.Fatal(err)
	}
	if len(enc.requests) != 2 || enc.requests[0].CiphertextBlob != nil || string(enc.requests[1].CiphertextBlob) != "sealed blob" {
		t.Fatalf("first start sent %+v; want unseal{} then unseal{blob}", enc.requests)
	}
	c := enc.requests[0].Credentials
	if c.AccessKeyID != "AKIAHOST" || c.SecretAccessKey != "host-secret" || c.SessionToken != "tok" || c.Expiration != exp.Unix() {
		t.Fatalf("credentials sent: %+v", c)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob file: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "sealed blob" {
		t.Fatalf("blob file holds %q", b)
	}

	// Restart: the stored blob is sent; nothing new is generated.
	enc.requests = nil
	if err := newKeeper(t, path, exp).Unseal(context.Background(), enc.call); err != nil {
		t.Fatal(err)
	}
	if len(enc.requests) != 1 || string(enc.requests[0].CiphertextBlob) != "sealed blob" {
		t.Fatalf("restart sent %+v; want unseal{blob} only", enc.requests)
	}

	// A blob KMS cannot open is not replaced by a new seed.
	enc.blob = []byte("another")
	enc.requests = nil
	if err := newKeeper(t, path, exp).Unseal(context.Background(), enc.call); err == nil {
		t.Fatal("unseal with a blob the enclave refused succeeded")
	}
	if len(enc.requests) != 1 {
		t.Fatalf("after a refused blob the host sent %d requests; want no generate", len(enc.requests))
	}
}

func TestUnsealRefuses(t *testing.T) {
	exp := now.Add(time.Hour)
	t.Run("no new blob on first start", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		enc := &fakeEnclave{blob: []byte("b"), created: false}
		err := newKeeper(t, path, exp).Unseal(context.Background(), enc.call)
		if err == nil || !strings.Contains(err.Error(), "without a new sealed seed") {
			t.Fatalf("Unseal = %v", err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatal("a blob file was written")
		}
	})
	t.Run("blob others can read", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		os.WriteFile(path, []byte("b"), 0o600)
		os.Chmod(path, 0o644)
		err := newKeeper(t, path, exp).Unseal(context.Background(), (&fakeEnclave{}).call)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("Unseal = %v", err)
		}
	})
	t.Run("empty blob", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		os.WriteFile(path, nil, 0o600)
		err := newKeeper(t, path, exp).Unseal(context.Background(), (&fakeEnclave{}).call)
		if err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Fatalf("Unseal = %v", err)
		}
	})
	t.Run("expired credentials", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		enc := &fakeEnclave{blob: []byte("b"), created: true}
		err := newKeeper(t, path, now.Add(-time.Second)).Unseal(context.Background(), enc.call)
		if err == nil || !strings.Contains(err.Error(), "expired") || len(enc.requests) != 0 {
			t.Fatalf("Unseal = %v after %d requests", err, len(enc.requests))
		}
	})
}

func TestRefreshSchedule(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	enc := &fakeEnclave{blob: []byte("b"), created: true}
	for _, tt := range []struct {
		name string
		exp  time.Time
		want time.Duration
	}{
		{"an hour left", now.Add(time.Hour), 15 * time.Minute},
		{"ten minutes left", now.Add(10 * time.Minute), 5 * time.Minute},
		{"about to expire", now.Add(time.Minute), 30 * time.Second},
		{"never expire", time.Time{}, 15 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := newKeeper(t, path, tt.exp)
			if got := k.nextRefresh(); got != 30*time.Second {
				t.Fatalf("before any credentials were sent: %v", got)
			}
			enc.provided = nil
			if err := k.provide(context.Background(), enc.call); err != nil {
				t.Fatal(err)
			}
			if len(enc.provided) != 1 || enc.provided[0].SecretAccessKey != "host-secret" {
				t.Fatalf("provided %+v", enc.provided)
			}
			if got := k.nextRefresh(); got != tt.want {
				t.Fatalf("next refresh in %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDefaultCredentials: the default chain is read when first needed, here
// from the environment.
func TestDefaultCredentials(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	p := DefaultCredentials("eu-west-2", time.Minute)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	c, err := p.Retrieve(context.Background())
	if err != nil || c.AccessKeyID != "AKIAENV" || c.SecretAccessKey != "env-secret" {
		t.Fatalf("Retrieve = %+v, %v", c.AccessKeyID, err)
	}
}
