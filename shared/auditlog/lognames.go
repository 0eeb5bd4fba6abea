package auditlog

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// MaxLogNameLen bounds a log name.
const MaxLogNameLen = 63

// ErrLogName is wrapped by every error about a log name or a log's origin.
var ErrLogName = errors.New("invalid audit log name")

// CheckLogName reports whether name may name a log: "" (the default log) or
// 1 to 63 characters of lowercase letters, digits and '-', the first not '-'
// (^[a-z0-9][a-z0-9-]{0,62}$).
func CheckLogName(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > MaxLogNameLen {
		return fmt.Errorf("%w: %.64q is longer than %d characters", ErrLogName, name, MaxLogNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' && i > 0) {
			return fmt.Errorf("%w: %q must be lowercase letters, digits and '-', not starting with '-'", ErrLogName, name)
		}
	}
	return nil
}

// LogOrigin is the origin of the log named name of an enclave whose default
// log has origin def: def itself for "", else def + "/" + name. name must
// pass CheckLogName.
func LogOrigin(def, name string) string {
	if name == "" {
		return def
	}
	return def + "/" + name
}

// LogName is the inverse of LogOrigin: the name of the log with the given
// origin, if origin is def or def + "/" + a valid name.
func LogName(def, origin string) (string, error) {
	if origin == def {
		return "", nil
	}
	name, ok := strings.CutPrefix(origin, def+"/")
	if !ok || name == "" {
		return "", fmt.Errorf("%w: origin %.128q is neither %s nor %s/NAME", ErrLogName, origin, def, def)
	}
	if err := CheckLogName(name); err != nil {
		return "", fmt.Errorf("origin %.128q: %w", origin, err)
	}
	return name, nil
}

// parseVerifierKey splits an Ed25519 note verifier key ("name+hash+base64")
// into its name and public key, after checking it is one note accepts.
func parseVerifierKey(vkey string) (string, ed25519.PublicKey, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %.128q is not a note verifier key: %v", ErrLogName, vkey, err)
	}
	// name + "+" + 8 hex digits + "+" + base64 (which may hold '+').
	rest := vkey[len(v.Name())+1:]
	if len(rest) < 9 || rest[8] != '+' {
		return "", nil, fmt.Errorf("%w: %.128q is not a note verifier key", ErrLogName, vkey)
	}
	b, err := base64.StdEncoding.DecodeString(rest[9:])
	if err != nil || len(b) != 1+ed25519.PublicKeySize || b[0] != 1 {
		return "", nil, fmt.Errorf("%w: %.128q is not an Ed25519 note verifier key", ErrLogName, vkey)
	}
	return v.Name(), ed25519.PublicKey(b[1:]), nil
}

// OriginVerifierKey returns the note verifier key of the log with the given
// origin, of the enclave whose default log's verifier key is def (the
// manifest's checkpoint_verifier_key): the same Ed25519 key under the name
// origin. origin must be def's name or def's name + "/" + a valid log name;
// any other origin is not a log of this enclave, and is refused.
func OriginVerifierKey(def, origin string) (string, error) {
	defName, pub, err := parseVerifierKey(def)
	if err != nil {
		return "", err
	}
	if _, err := LogName(defName, origin); err != nil {
		return "", err
	}
	vkey, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return "", fmt.Errorf("failed to make the verifier key of %s: %w", origin, err)
	}
	return vkey, nil
}

// LogVerifierKey returns the note verifier key of the log named name ("" for
// the default log) of the enclave whose default log's verifier key is def:
// def's key under the name LogOrigin(def's name, name).
func LogVerifierKey(def, name string) (string, error) {
	if err := CheckLogName(name); err != nil {
		return "", err
	}
	defName, _, err := parseVerifierKey(def)
	if err != nil {
		return "", err
	}
	return OriginVerifierKey(def, LogOrigin(defName, name))
}

// VerifierKeyLog reports whether vkey is the verifier key of one of the logs
// of the enclave whose default log's verifier key is def (the manifest's
// checkpoint_verifier_key): the same key bytes and key hash, under the
// default log's name or that name + "/" + a valid log name. It returns the
// log's name ("" for the default log).
func VerifierKeyLog(def, vkey string) (string, error) {
	defName, _, err := parseVerifierKey(def)
	if err != nil {
		return "", err
	}
	name, _, err := parseVerifierKey(vkey)
	if err != nil {
		return "", err
	}
	logName, err := LogName(defName, name)
	if err != nil {
		return "", err
	}
	want, err := OriginVerifierKey(def, name)
	if err != nil {
		return "", err
	}
	if want != vkey {
		return "", fmt.Errorf("%w: %.128q is not the key of %s (this enclave's key under that name is %s)", ErrLogName, vkey, name, want)
	}
	return logName, nil
}
