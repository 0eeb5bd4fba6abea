package relay

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/broker/shared/protocol"
)

// TestKeeperHostOriginEnclave: an enclave that does not serve the issuer
// origin answers bad_request; the keeper says what to do, once.
func TestKeeperHostOriginEnclave(t *testing.T) {
	var logs bytes.Buffer
	k := &Keeper{Path: filepath.Join(t.TempDir(), ChainFile), Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Call: func(context.Context, protocol.Op, any, any) error {
			return protocol.Errorf(protocol.CodeBadRequest, "this enclave does not serve the issuer origin")
		}}
	for range 3 {
		if err := k.Sync(t.Context()); !errors.Is(err, protocol.ErrBadRequest) {
			t.Fatalf("Sync = %v", err)
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Fatalf("the mismatch was logged %d times:\n%s", n, logs.String())
	}
}

// TestKeeperRefusesAnOversizeFile: the stored chain is read bounded.
func TestKeeperRefusesAnOversizeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), ChainFile)
	if err := os.WriteFile(path, bytes.Repeat([]byte("A"), maxChainFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &Keeper{Path: path, Call: func(_ context.Context, _ protocol.Op, _, resp any) error {
		*resp.(*protocol.OriginStateResponse) = protocol.OriginStateResponse{}
		return nil
	}}
	if err := k.Sync(t.Context()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Sync with an oversize chain file = %v", err)
	}
}
