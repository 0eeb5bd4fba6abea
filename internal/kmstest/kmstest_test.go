package kmstest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func post(t *testing.T, url, op string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url+"/", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService."+op)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s answer is not JSON: %q", op, out)
	}
	return res.StatusCode, m
}

// TestShimPolicy: without a Recipient the key policy denies the seed
// operations before local-kms sees them; other operations pass through to the
// real local-kms.
func TestShimPolicy(t *testing.T) {
	f := NewForger(t, "nitro", map[int][]byte{0: bytes.Repeat([]byte{1}, 48)})
	s := Start(t, Options{Roots: f.RootPool(), PCRs: map[int][]byte{0: bytes.Repeat([]byte{1}, 48)}})
	for _, op := range []string{"GenerateDataKey", "Decrypt"} {
		code, m := post(t, s.URL, op, map[string]any{"KeyId": KeyID, "KeySpec": "AES_256", "CiphertextBlob": "AAAA"})
		if code != 400 || m["__type"] != "AccessDeniedException" || !strings.Contains(m["message"].(string), "DenyWithoutAttestation") {
			t.Errorf("%s without a Recipient: %d %v", op, code, m)
		}
		if s.Calls(op) != 0 {
			t.Errorf("%s without a Recipient reached local-kms", op)
		}
	}
	code, m := post(t, s.URL, "DescribeKey", map[string]any{"KeyId": KeyID})
	meta, _ := m["KeyMetadata"].(map[string]any)
	if code != 200 || meta["Arn"] != KeyID {
		t.Fatalf("DescribeKey through the shim: %d %v", code, m)
	}
}
