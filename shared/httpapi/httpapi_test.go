package httpapi_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/strictjson"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const (
	wallet = "0x1a642f0e3c3af545e7acbd38b07251b3990914f1"
	jwt    = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
)

// vectors are fixed values and the files holding their exact encoding, as the
// host writes it (json.Encoder: compact, one trailing newline).
// logProof is shared/tlogproof's golden vector.
const logProof = `c2sp.org/tlog-proof@v1
index 5
SFM123z+yWXxX/dF/GJcQdXqJkaTaTAWWCj3PdS2iFQ=
/w4ywg/2W5esELOyZ3uHKqPVoCh9lFesukflfPSkpz8=
l5nzB1F+9RfCIF35tndivzR1ayAJn7ffzOdrzr0nOy4=
ptHeE8xxqg97JCQwB7g6+9U/EkhyVHQq0jihTdMoi3Y=

broker.example.com/audit
13
wMEonwBgX419h4C59CZMc2zPuEzpFwjCsn5kJr/H2Kg=

— broker.example.com/audit nySiQwXNwZh6Kjgkcr7nc2PWrFmIRSY2ce63F1+d7H+X4LWiq6fXQREPoz2Q2ylipJ6VqU06sf+mwUyC4TuM71kgVwk=
`

var vectors = []struct {
	file string
	v    any
}{
	{"discovery.json", func() *httpapi.Discovery { d := httpapi.NewDiscovery("https://broker.example.com"); return &d }()},
	{"error.json", &httpapi.Error{Error: "unauthorized", Message: "session was revoked; sign in again"}},
	{"nonce_response.json", &httpapi.NonceResponse{Nonce: "kJ3x9QmP2vLw8aZt", ExpiresAt: 1767323045}},
	{"session_request.json", &httpapi.SessionRequest{Message: "broker.example.com wants you to sign in with your Ethereum account:\n0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1\n\nSign in to AgentKeys.\n\nURI: https://broker.example.com/v1/session\nVersion: 1\nChain ID: 1\nNonce: kJ3x9QmP2vLw8aZt\nIssued At: 2026-01-02T03:04:05Z",
		Signature: "0x" + "11" + "22222222222222222222222222222222222222222222222222222222222222" + "3333333333333333333333333333333333333333333333333333333333333333" + "1b"}},
	{"session_response.json", &httpapi.SessionResponse{Session: jwt, Wallet: wallet, Expiration: 1767409445}},
	{"revoke_response.json", &httpapi.RevokeResponse{Revoked: true, Wallet: wallet}},
	{"revoke_response_already.json", &httpapi.RevokeResponse{Revoked: false, Wallet: wallet}},
	{"mint_jwt_request.json", &httpapi.MintJWTRequest{Audience: "sts.amazonaws.com", TTLSeconds: 900}},
	{"mint_jwt_request_empty.json", &httpapi.MintJWTRequest{}},
	{"mint_jwt_response.json", &httpapi.MintJWTResponse{JWT: jwt, Wallet: wallet, Expiration: 1767323345, LogProof: logProof}},
	{"mint_aws_creds_request.json", &httpapi.MintAWSCredsRequest{DurationSeconds: 1800}},
	{"mint_aws_creds_response.json", &httpapi.MintAWSCredsResponse{AccessKeyID: "ASIAEXAMPLE000000001", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		SessionToken: "FwoGZXIvYXdzEXAMPLE//////////", Expiration: 1767326645, Wallet: wallet, LogProof: logProof}},
	{"audit_logs.json", &httpapi.AuditLogs{Logs: []httpapi.AuditLog{{Name: "", Path: "/v1/audit/logs/_default/"}, {Name: "host-b", Path: "/v1/audit/logs/host-b/", Own: true}}}},
	{"attestation.json", &httpapi.Attestation{Document: []byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22}, Manifest: []byte(`{"issuer":"https://broker.example.com"}`),
		ManifestSHA256: "bcc2753b29b62f3386506da2838ff6bcdfcedfd4d59dc83005cd8bcb35582cc4", Nonce: "00112233445566778899aabbccddeeff", Mode: "simulated"}},
}

func TestGolden(t *testing.T) {
	for _, vec := range vectors {
		t.Run(vec.file, func(t *testing.T) {
			var buf bytes.Buffer
			if err := json.NewEncoder(&buf).Encode(vec.v); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", vec.file)
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("encoding:\n got %s\nwant %s", buf.Bytes(), want)
			}
			// Decoding the golden bytes, strictly, gives the value back.
			got := reflect.New(reflect.TypeOf(vec.v).Elem()).Interface()
			if err := strictjson.Decode(want, got, strictjson.Limits{}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, vec.v) {
				t.Fatalf("decoded %+v, want %+v", got, vec.v)
			}
		})
	}
}
