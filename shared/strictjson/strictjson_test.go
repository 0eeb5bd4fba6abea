package strictjson_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentkeys/broker/shared/strictjson"
)

type inner struct {
	Name string `json:"name"`
}

type target struct {
	Audience string            `json:"audience,omitempty"`
	TTL      int64             `json:"ttl_seconds"`
	List     []inner           `json:"list"`
	Labels   map[string]string `json:"labels"`
	Raw      json.RawMessage   `json:"raw"`
	Plain    string
	Skipped  string `json:"-"`
	hidden   string
}

func TestDecode(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = success; else a substring of the error
	}{
		{`{}`, ""},
		{` {"audience":"a","ttl_seconds":5} `, ""},
		{`{"list":[{"name":"x"},{"name":"y"}],"labels":{"K":"v","k":"w"},"raw":{"a":1,"A":2}}`, ""},
		{`{"Plain":"p"}`, ""},
		{`{"audience":null}`, ""},

		{`{"audience":"a","audience":"b"}`, `audience: key appears twice`},
		{`{"Audience":"a"}`, `Audience: keys are case-sensitive; want "audience"`},
		{`{"AUDIENCE":"a"}`, `case-sensitive`},
		{`{"plain":"p"}`, `case-sensitive; want "Plain"`},
		{`{"aud":"a"}`, `aud: unknown field`},
		{`{"Skipped":"x"}`, `unknown field`},
		{`{"-":"x"}`, `unknown field`},
		{`{"hidden":"x"}`, `unknown field`},
		{`{"list":[{"name":"x","Name":"y"}]}`, `list[0].Name: keys are case-sensitive`},
		{`{"list":[{"name":"x"},{"nom":"y"}]}`, `list[1].nom: unknown field`},
		{`{"labels":{"k":"v","k":"w"}}`, `labels.k: key appears twice`},
		{`{"raw":{"a":1,"a":2}}`, `raw.a: key appears twice`},
		{`{"ttl_seconds":"5"}`, `ttl_seconds: want an integer, not a JSON string`},
		{`{"audience":5}`, `want a string`},
		{`{} {}`, `trailing data`},
		{`{}x`, `trailing data`},
		{`[]`, `want a JSON object`},
		{`"x"`, `want a JSON object`},
		{``, `JSON ends early`},
		{`{"audience":"a"`, `JSON ends early`},
		{`{"audience":"a",}`, `not valid JSON`},
		{`{"raw":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, `nested deeper than 32 levels`},
	}
	for _, tt := range tests {
		var v target
		err := strictjson.Decode([]byte(tt.in), &v, strictjson.Limits{})
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.in, err)
		case tt.want != "" && err == nil:
			t.Errorf("%s: accepted, want an error with %q", tt.in, tt.want)
		case tt.want != "" && !strings.Contains(err.Error(), tt.want):
			t.Errorf("%s: error %q, want %q", tt.in, err, tt.want)
		}
	}
}

func TestDecodeValues(t *testing.T) {
	var v target
	if err := strictjson.Decode([]byte(`{"audience":"sts","ttl_seconds":120,"list":[{"name":"n"}]}`), &v, strictjson.Limits{}); err != nil {
		t.Fatal(err)
	}
	if v.Audience != "sts" || v.TTL != 120 || len(v.List) != 1 || v.List[0].Name != "n" {
		t.Fatalf("decoded %+v", v)
	}
}

func TestLimits(t *testing.T) {
	var v target
	big := `{"audience":"` + strings.Repeat("a", 100) + `"}`
	if err := strictjson.Decode([]byte(big), &v, strictjson.Limits{MaxSize: 100}); err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Errorf("size: %v", err)
	}
	if err := strictjson.Decode([]byte(`{"raw":[[1]]}`), &v, strictjson.Limits{MaxDepth: 2}); err == nil || !strings.Contains(err.Error(), "deeper than 2") {
		t.Errorf("depth: %v", err)
	}
	if err := strictjson.Decode([]byte(`{"raw":[1]}`), &v, strictjson.Limits{MaxDepth: 2}); err != nil {
		t.Errorf("depth 2: %v", err)
	}
	if err := strictjson.Decode([]byte(`{}`), v, strictjson.Limits{}); err == nil {
		t.Error("a non-pointer was accepted")
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts, encoding/json
// accepts too, with the same result.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{}`, `{"audience":"a","ttl_seconds":1}`, `{"list":[{"name":"x"}]}`, `{"labels":{"a":"b"}}`,
		`{"raw":{"x":[1,2,{"y":null}]}}`, `{"Audience":"x"}`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var strict, lax target
		if strictjson.Decode(data, &strict, strictjson.Limits{}) != nil {
			return
		}
		if err := json.Unmarshal(data, &lax); err != nil {
			t.Fatalf("strict accepted what encoding/json refuses: %v", err)
		}
		a, _ := json.Marshal(strict)
		b, _ := json.Marshal(lax)
		if string(a) != string(b) {
			t.Fatalf("strict %s, lax %s", a, b)
		}
	})
}
