package auditlog

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

const defOrigin = "broker.example.com/audit"

func testKey(t *testing.T, seed byte, name string) string {
	t.Helper()
	priv := ed25519.NewKeyFromSeed([]byte(strings.Repeat(string(rune(seed)), 32)))
	vkey, err := note.NewEd25519VerifierKey(name, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

func TestCheckLogName(t *testing.T) {
	for name, ok := range map[string]bool{
		"": true, "a": true, "0": true, "host-a": true, "eu-west-1-b": true, strings.Repeat("a", 63): true,
		strings.Repeat("a", 64): false, "-a": false, "Host": false, "a/b": false, "a b": false, "a_b": false,
		"a.b": false, "../a": false, "a+b": false, "é": false, "a\n": false,
	} {
		err := CheckLogName(name)
		if (err == nil) != ok || (err != nil && !errors.Is(err, ErrLogName)) {
			t.Errorf("CheckLogName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

func TestLogOrigin(t *testing.T) {
	if got := LogOrigin(defOrigin, ""); got != defOrigin {
		t.Errorf("default origin = %q", got)
	}
	if got := LogOrigin(defOrigin, "host-a"); got != defOrigin+"/host-a" {
		t.Errorf("named origin = %q", got)
	}
	for origin, want := range map[string]string{defOrigin: "", defOrigin + "/host-a": "host-a"} {
		if got, err := LogName(defOrigin, origin); err != nil || got != want {
			t.Errorf("LogName(%q) = %q, %v; want %q", origin, got, err, want)
		}
	}
	for _, origin := range []string{defOrigin + "/", defOrigin + "/A", defOrigin + "/a/b", defOrigin + "x", "other.example/audit", defOrigin + "/-a"} {
		if got, err := LogName(defOrigin, origin); err == nil {
			t.Errorf("LogName(%q) = %q, want an error", origin, got)
		}
	}
}

// TestVerifierKeyLog: a verifier key is bound to the manifest's when it is
// the same key under the default log's name or a named log's; any other key
// or name is refused.
func TestVerifierKeyLog(t *testing.T) {
	def := testKey(t, 1, defOrigin)
	named := testKey(t, 1, defOrigin+"/host-a")
	for _, tc := range []struct {
		name, vkey, log string
		ok              bool
	}{
		{"default", def, "", true},
		{"named", named, "host-a", true},
		{"other key, default name", testKey(t, 2, defOrigin), "", false},
		{"other key, named", testKey(t, 2, defOrigin+"/host-a"), "", false},
		{"other prefix", testKey(t, 1, "other.example/audit/host-a"), "", false},
		{"prefix without slash", testKey(t, 1, defOrigin+"host-a"), "", false},
		{"name with slash", testKey(t, 1, defOrigin+"/host-a/b"), "", false},
		{"uppercase name", testKey(t, 1, defOrigin+"/Host-A"), "", false},
		{"empty name", testKey(t, 1, defOrigin+"/"), "", false},
		{"wrong hash", named[:len(defOrigin+"/host-a")+1] + "00000000" + named[len(defOrigin+"/host-a")+9:], "", false},
		{"not a key", "broker.example.com/audit", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := VerifierKeyLog(def, tc.vkey)
			if tc.ok != (err == nil) || got != tc.log {
				t.Fatalf("VerifierKeyLog(%s) = %q, %v; want ok %v", tc.vkey, got, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrLogName) {
				t.Fatalf("error %v does not wrap ErrLogName", err)
			}
		})
	}
	if _, err := VerifierKeyLog("nonsense", def); err == nil {
		t.Error("a bad manifest key was accepted")
	}
}

// TestLogVerifierKey: the key of a named log verifies what the same private
// key signs under that name, and only names of this enclave's logs get one.
func TestLogVerifierKey(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	def, _ := note.NewEd25519VerifierKey(defOrigin, priv.Public().(ed25519.PublicKey))
	if got, err := OriginVerifierKey(def, defOrigin); err != nil || got != def {
		t.Fatalf("OriginVerifierKey(default) = %q, %v", got, err)
	}
	if got, err := LogVerifierKey(def, ""); err != nil || got != def {
		t.Fatalf("LogVerifierKey(default) = %q, %v", got, err)
	}
	origin := defOrigin + "/host-a"
	vkey, err := OriginVerifierKey(def, origin)
	if err != nil || !strings.HasPrefix(vkey, origin+"+") {
		t.Fatalf("OriginVerifierKey(named) = %q, %v", vkey, err)
	}
	if got, err := LogVerifierKey(def, "host-a"); err != nil || got != vkey {
		t.Fatalf("LogVerifierKey(host-a) = %q, %v; want %s", got, err, vkey)
	}
	// A note signer key is "PRIVATE+KEY+name+hash+base64(0x01 || seed)".
	hash := vkey[len(origin)+1 : len(origin)+9]
	signer, err := note.NewSigner("PRIVATE+KEY+" + origin + "+" + hash + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...)))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, signer)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := note.NewVerifier(vkey)
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatalf("the named key does not verify the named signature: %v", err)
	}
	for _, o := range []string{"other.example/audit", defOrigin + "/A", defOrigin + "/a/b", defOrigin + "-a"} {
		if got, err := OriginVerifierKey(def, o); err == nil {
			t.Errorf("OriginVerifierKey(%q) = %q, want an error", o, got)
		}
	}
	for _, n := range []string{"A", "a/b", "-a"} {
		if got, err := LogVerifierKey(def, n); err == nil {
			t.Errorf("LogVerifierKey(%q) = %q, want an error", n, got)
		}
	}
}

// FuzzVerifierKeyLog: verifier keys and origins come from hosts and files;
// whatever they hold, the helpers do not panic, and a key they accept is
// exactly the one LogVerifierKey gives for its name.
func FuzzVerifierKeyLog(f *testing.F) {
	def, _ := note.NewEd25519VerifierKey(defOrigin, ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey))
	named, err := LogVerifierKey(def, "host-a")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(def, named)
	f.Add(def, def)
	f.Add(named, def)
	f.Add(def, "broker.example.com/audit/x+00000000+AQ")
	f.Fuzz(func(t *testing.T, def, vkey string) {
		name, err := VerifierKeyLog(def, vkey)
		if err != nil {
			return
		}
		if CheckLogName(name) != nil {
			t.Fatalf("accepted bad name %q", name)
		}
		v, _ := note.NewVerifier(vkey)
		again, err := OriginVerifierKey(def, v.Name())
		if err != nil || again != vkey {
			t.Fatalf("OriginVerifierKey(%q) = %q, %v; VerifierKeyLog accepted %q", v.Name(), again, err, vkey)
		}
	})
}
