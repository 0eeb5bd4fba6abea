package api

import (
	"encoding/json"
	"reflect"
	"testing"

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
