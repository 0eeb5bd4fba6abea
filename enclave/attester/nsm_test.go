//go:build linux

package attester

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// fakeSession answers NSM requests the way the device does, without /dev/nsm.
type fakeSession struct {
	attestation *request.Attestation // last request
	document    []byte               // returned by Attestation
	chunk       int                  // bytes per GetRandom
	randomCalls int
	errorCode   response.ErrorCode // returned for every request if set
	closed      bool
}

func (f *fakeSession) Send(req request.Request) (response.Response, error) {
	if f.closed {
		return response.Response{}, errors.New("send on closed session")
	}
	if f.errorCode != "" {
		return response.Response{Error: f.errorCode}, nil
	}
	switch r := req.(type) {
	case *request.DescribePCR:
		return response.Response{DescribePCR: &response.DescribePCR{Lock: true, Data: bytes.Repeat([]byte{byte(r.Index)}, 48)}}, nil
	case *request.Attestation:
		f.attestation = r
		return response.Response{Attestation: &response.Attestation{Document: f.document}}, nil
	case *request.GetRandom:
		f.randomCalls++
		return response.Response{GetRandom: &response.GetRandom{Random: bytes.Repeat([]byte{byte(f.randomCalls)}, f.chunk)}}, nil
	}
	return response.Response{}, fmt.Errorf("unexpected request %T", req)
}

func (f *fakeSession) Close() error { f.closed = true; return nil }

func TestNitro(t *testing.T) {
	f := &fakeSession{document: []byte("document"), chunk: 7}
	n, err := newNitro(f)
	if err != nil {
		t.Fatal(err)
	}
	if n.Mode() != ModeNitro {
		t.Errorf("Mode() = %q", n.Mode())
	}
	pcrs := n.PCRs()
	if len(pcrs) != 16 || !bytes.Equal(pcrs[15], bytes.Repeat([]byte{15}, 48)) {
		t.Errorf("PCRs() = %x", pcrs)
	}

	doc, err := n.Attest([]byte("nonce"), []byte{}, []byte("pk"))
	if err != nil {
		t.Fatal(err)
	}
	f.document[0] = 'X' // the device buffer is reused
	if string(doc) != "document" {
		t.Errorf("Attest returned %q", doc)
	}
	if a := f.attestation; string(a.Nonce) != "nonce" || a.UserData != nil || string(a.PublicKey) != "pk" {
		t.Errorf("request = %+v; want the empty user data sent as nil", a)
	}

	f.attestation = nil
	if _, err := n.Attest(nil, nil, make([]byte, MaxPublicKey+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize public key: %v", err)
	}
	if f.attestation != nil {
		t.Error("oversize request reached the device")
	}

	buf := make([]byte, 100)
	if got, err := n.Read(buf); err != nil || got != 100 {
		t.Fatalf("Read = %d, %v", got, err)
	}
	if f.randomCalls != 15 || buf[99] != 15 || buf[0] != 1 {
		t.Errorf("Read made %d GetRandom calls, buf = %x", f.randomCalls, buf)
	}

	f.errorCode = response.ECInternalError
	if _, err := n.Attest(nil, nil, nil); err == nil {
		t.Error("Attest ignored an NSM error code")
	}
	if got, err := n.Read(buf); err == nil || got != 0 {
		t.Errorf("Read ignored an NSM error code: %d, %v", got, err)
	}
	f.errorCode = ""

	f.chunk = 0
	if _, err := n.Read(buf); err == nil {
		t.Error("Read accepted an empty GetRandom response")
	}

	if err := n.Close(); err != nil || !f.closed {
		t.Fatalf("Close = %v, session closed %v", err, f.closed)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := n.Attest(nil, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Attest after Close: %v", err)
	}
	if _, err := n.Read(buf); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestNitroOpenFails(t *testing.T) {
	if _, err := newNitro(&fakeSession{errorCode: response.ECInternalError}); err == nil {
		t.Error("newNitro ignored a DescribePCR error")
	}
}
