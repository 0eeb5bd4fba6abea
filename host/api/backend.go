package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentkeys/broker/shared/siwe"
)

// SessionBackend validates opaque bearers with an existing AgentKeys backend:
// GET {URL}/session/validate with the bearer → {"wallet": …}. A 401 from the
// backend stays 401; anything else unexpected is 502.
//
// The enclave cannot check such a wallet itself, so this works only when the
// enclave policy sets allow_host_asserted_wallet, and every JWT and audit
// record minted this way is marked.
type SessionBackend struct {
	URL    string
	Client *http.Client
}

// NewSessionBackend validates the URL and returns a backend client.
func NewSessionBackend(raw string) (*SessionBackend, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("session backend URL %q must be an http(s) URL", raw)
	}
	return &SessionBackend{URL: strings.TrimRight(raw, "/"), Client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// Validate returns the lowercase wallet for bearer.
func (b *SessionBackend) Validate(ctx context.Context, bearer string) (string, *httpError) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/session/validate", nil)
	if err != nil {
		return "", errorf(http.StatusBadGateway, KindUpstream, "session backend request failed")
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := b.Client.Do(req)
	if err != nil {
		return "", &httpError{status: http.StatusBadGateway, kind: KindUpstream, message: "session backend unreachable", outcome: "backend_error"}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return "", errorf(http.StatusUnauthorized, KindUnauthorized, "session backend refused the session")
	case resp.StatusCode != http.StatusOK:
		return "", &httpError{status: http.StatusBadGateway, kind: KindUpstream, message: fmt.Sprintf("session backend answered %d", resp.StatusCode), outcome: "backend_error"}
	}
	var v struct {
		Wallet string `json:"wallet"`
	}
	if json.Unmarshal(body, &v) != nil || siwe.ValidateAddress(v.Wallet) != nil {
		return "", &httpError{status: http.StatusBadGateway, kind: KindUpstream, message: "session backend answered without a valid wallet", outcome: "backend_error"}
	}
	return strings.ToLower(v.Wallet), nil
}
