package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/httpapi"
)

// FuzzDecodeRequestBody drives the host's request decoding over each route's
// body type: it never panics, answers only 400 when it refuses, and what it
// accepts encoding/json reads the same way.
func FuzzDecodeRequestBody(f *testing.F) {
	for _, s := range []string{``, `{}`, ` `, `{"audience":"sts.amazonaws.com","ttl_seconds":300}`, `{"duration_seconds":900}`,
		`{"message":"m","signature":"0x00"}`, `{"audience":"a","audience":"b"}`, `{"Audience":"a"}`, `{"x":[{"y":{}}]}`} {
		f.Add([]byte(s))
	}
	types := []func() any{
		func() any { return new(httpapi.MintJWTRequest) },
		func() any { return new(httpapi.MintAWSCredsRequest) },
		func() any { return new(httpapi.SessionRequest) },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range types {
			for _, optional := range []bool{true, false} {
				v := mk()
				if e := decodeBody(data, v, optional); e != nil {
					if e.status != 400 || e.kind != KindBadRequest {
						t.Fatalf("refused with %d %s", e.status, e.kind)
					}
					continue
				}
				if !optional || len(data) > 0 && json.Valid(data) {
					lax := mk()
					if err := json.Unmarshal(data, lax); err != nil {
						t.Fatalf("accepted what encoding/json refuses: %v", err)
					}
					if !reflect.DeepEqual(v, lax) {
						t.Fatalf("strict %+v, encoding/json %+v", v, lax)
					}
				}
			}
		}
	})
}

// FuzzParseCheckpointNote drives the page's reading of a checkpoint note:
// it never panics, and what it accepts is a canonical checkpoint with one to
// 100 signatures.
func FuzzParseCheckpointNote(f *testing.F) {
	root := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	for _, s := range []string{
		"log.example/audit\n3\n" + root + "\n\n— log.example/audit AAAAAWFiY2Q=\n",
		"log.example/audit\n3\n" + root + "\n\n— log.example/audit AAAAAWFiY2Q=\n— w.example/1 AAAAAmVmZ2g=\n",
		"log.example/audit\n3\n" + root + "\n\n— log.example/audit AAAAAWFiY2Q=\n— log.example/audit AAAAAWFiY2Q=\n",
		"log.example/audit\n3\n" + root + "\n\n",
		"log.example/audit\n3\n" + root + "\n",
		"x\n-1\n\n\n— a b\n", "\n\n— \n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := parseCheckpointNote(data)
		if err != nil {
			return
		}
		text, _, _ := bytes.Cut(data, []byte("\n\n"))
		c, err := auditlog.ParseCheckpoint(string(text) + "\n")
		if err != nil || cp.Note != string(data) || cp.Origin != c.Origin || cp.Size != c.Tree.N || cp.RootHash != c.Tree.Hash.String() {
			t.Fatalf("accepted %q as %+v (%v)", data, cp, err)
		}
		if len(cp.Signatures) == 0 || len(cp.Signatures) > 100 {
			t.Fatalf("%q: %d signatures", data, len(cp.Signatures))
		}
		for _, s := range cp.Signatures {
			if len(s.KeyID) != 8 || s.Role != roleUnknown || s.Name == "" {
				t.Fatalf("%q: signature %+v", data, s)
			}
		}
	})
}
