package attester

import (
	"bytes"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hf/nitrite"
)

func TestSimulatedVerifies(t *testing.T) {
	clock := newFakeClock()
	s := newTestSimulated(t, "", clock)
	if s.Mode() != ModeSimulated {
		t.Errorf("Mode() = %q", s.Mode())
	}
	tests := []struct {
		name                       string
		nonce, userData, publicKey []byte
	}{
		{"all set", []byte("nonce-0123456789"), []byte("user data"), []byte("public key DER")},
		{"all nil", nil, nil, nil},
		{"empty is absent", []byte{}, []byte{}, []byte{}},
		{"at the limits", bytes.Repeat([]byte{1}, MaxNonce), bytes.Repeat([]byte{2}, MaxUserData), bytes.Repeat([]byte{3}, MaxPublicKey)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := s.Attest(tc.nonce, tc.userData, tc.publicKey)
			if err != nil {
				t.Fatal(err)
			}
			d, err := verify(doc, s.RootPool(), clock.Now())
			if err != nil {
				t.Fatalf("simulated document does not verify with RootPool: %v", err)
			}
			for _, f := range []struct {
				name     string
				got, arg []byte
			}{{"nonce", d.Nonce, tc.nonce}, {"user_data", d.UserData, tc.userData}, {"public_key", d.PublicKey, tc.publicKey}} {
				if !bytes.Equal(f.got, f.arg) {
					t.Errorf("%s = %x, want %x", f.name, f.got, f.arg)
				}
				// Absent fields are CBOR null, as from the NSM.
				if len(f.arg) == 0 && f.got != nil {
					t.Errorf("%s decoded to %#v, want nil from CBOR null", f.name, f.got)
				}
			}
			if len(tc.nonce) == 0 {
				fields := payloadFields(t, decodeSign1(t, doc).payload)
				if v := fieldValue(t, fields, "nonce"); !bytes.Equal(v, []byte{0xf6}) {
					t.Errorf("absent nonce encoded as %x, want f6 (null)", v)
				}
			}
			want := s.PCRs()
			if len(d.PCRs) != len(want) {
				t.Errorf("document has %d PCRs, PCRs() %d", len(d.PCRs), len(want))
			}
			for i, v := range want {
				if !bytes.Equal(d.PCRs[uint(i)], v) {
					t.Errorf("PCR%d = %x, want %x", i, d.PCRs[uint(i)], v)
				}
			}
			if d.Timestamp != uint64(clock.Now().UnixMilli()) {
				t.Errorf("timestamp = %d, want %d", d.Timestamp, clock.Now().UnixMilli())
			}
			if !strings.HasPrefix(d.ModuleID, "i-simulated") {
				t.Errorf("module_id %q does not say it is simulated", d.ModuleID)
			}
		})
	}
}

func TestSimulatedSaysSo(t *testing.T) {
	s := newTestSimulated(t, "", newFakeClock())
	doc, err := s.Attest(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := verify(doc, s.RootPool(), testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	for _, der := range append([][]byte{d.Certificate}, d.CABundle...) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(c.Subject.String(), "NOT AWS") {
			t.Errorf("certificate subject %q does not say NOT AWS", c.Subject)
		}
		if len(der) > 1024 {
			t.Errorf("certificate %q is %d bytes, more than nitrite accepts", c.Subject, len(der))
		}
		if c.SignatureAlgorithm != x509.ECDSAWithSHA384 {
			t.Errorf("certificate %q is signed with %v", c.Subject, c.SignatureAlgorithm)
		}
	}
	if !strings.Contains(string(s.RootPEM()), "BEGIN CERTIFICATE") {
		t.Errorf("RootPEM() is not a PEM certificate")
	}
}

func TestSimulatedRejected(t *testing.T) {
	clock := newFakeClock()
	s := newTestSimulated(t, "", clock)
	nonce := []byte("nonce-0123456789")
	doc, err := s.Attest(nonce, []byte("user data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := verify(doc, s.RootPool(), testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := leafOf(t, d).NotAfter
	if _, err := verify(doc, s.RootPool(), notAfter); err != nil {
		t.Fatalf("document does not verify at the last second of the leaf: %v", err)
	}
	nonceAt := bytes.Index(doc, nonce)
	if nonceAt < 0 {
		t.Fatal("nonce not found in the document")
	}

	var uae x509.UnknownAuthorityError
	var cie x509.CertificateInvalidError
	for _, tc := range []struct {
		name  string
		doc   []byte
		roots *x509.CertPool
		at    time.Time
		isErr func(error) bool
	}{
		{"default AWS root", doc, nil, testEpoch, func(err error) bool { return errors.As(err, &uae) }},
		{"flipped payload byte", flipAt(doc, nonceAt), s.RootPool(), testEpoch, func(err error) bool { return errors.Is(err, nitrite.ErrBadSignature) }},
		{"flipped signature byte", flipAt(doc, len(doc)-1), s.RootPool(), testEpoch, func(err error) bool { return errors.Is(err, nitrite.ErrBadSignature) }},
		{"after the leaf expired", doc, s.RootPool(), notAfter.Add(time.Second), func(err error) bool {
			return errors.As(err, &cie) && cie.Reason == x509.Expired
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(tc.doc, tc.roots, tc.at)
			if err == nil || !tc.isErr(err) {
				t.Errorf("got %v", err)
			}
		})
	}
}

func TestSimulatedRootPersists(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	s1 := newTestSimulated(t, dir, clock)
	s2 := newTestSimulated(t, dir, clock)
	other := newTestSimulated(t, "", clock)

	if !bytes.Equal(s1.RootPEM(), s2.RootPEM()) {
		t.Error("second start on the same StateDir has a different root")
	}
	if bytes.Equal(s1.RootPEM(), other.RootPEM()) {
		t.Error("a new StateDir has the same root")
	}
	doc2, err := s2.Attest(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(doc2, s1.RootPool(), testEpoch); err != nil {
		t.Errorf("document from the second start does not verify with the first's root: %v", err)
	}
	docOther, err := other.Attest(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var uae x509.UnknownAuthorityError
	if _, err := verify(docOther, s1.RootPool(), testEpoch); !errors.As(err, &uae) {
		t.Errorf("document from another StateDir against this root: got %v, want unknown authority", err)
	}

	for name, want := range map[string]os.FileMode{SimulatedRootKeyFile: 0o600, SimulatedRootCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// The umask can only remove bits.
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s has mode %04o, want at most %04o", name, got, want)
		}
	}
}

func TestSimulatedKeyPermissions(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o604, false},
		{0o644, false},
		{0o660, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			newTestSimulated(t, dir, newFakeClock())
			keyPath := filepath.Join(dir, SimulatedRootKeyFile)
			if err := os.Chmod(keyPath, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := NewSimulated(SimulatedOptions{StateDir: dir, Executable: writeFile(t, "x"), Now: newFakeClock().Now})
			switch {
			case tc.ok && err != nil:
				t.Errorf("mode %04o refused: %v", tc.mode, err)
			case !tc.ok && err == nil:
				t.Errorf("mode %04o accepted", tc.mode)
			case !tc.ok && !strings.Contains(err.Error(), "chmod 600"):
				t.Errorf("error does not say how to fix it: %v", err)
			}
		})
	}
}

func TestSimulatedPartialState(t *testing.T) {
	for _, missing := range []string{SimulatedRootKeyFile, SimulatedRootCertFile} {
		t.Run(missing, func(t *testing.T) {
			dir := t.TempDir()
			newTestSimulated(t, dir, newFakeClock())
			if err := os.Remove(filepath.Join(dir, missing)); err != nil {
				t.Fatal(err)
			}
			_, err := NewSimulated(SimulatedOptions{StateDir: dir, Executable: writeFile(t, "x"), Now: newFakeClock().Now})
			if err == nil {
				t.Fatal("started with only one of the root files")
			}
			if _, statErr := os.Stat(filepath.Join(dir, missing)); statErr == nil {
				t.Error("the missing file was recreated")
			}
		})
	}
}

func TestSimulatedRootMismatch(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	newTestSimulated(t, dirA, newFakeClock())
	newTestSimulated(t, dirB, newFakeClock())
	// A's key with B's certificate.
	cert, err := os.ReadFile(filepath.Join(dirB, SimulatedRootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirA, SimulatedRootCertFile), cert, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = NewSimulated(SimulatedOptions{StateDir: dirA, Executable: writeFile(t, "x"), Now: newFakeClock().Now})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("got %v, want a key/certificate mismatch error", err)
	}
}

func TestSimulatedTooLarge(t *testing.T) {
	s := newTestSimulated(t, "", newFakeClock())
	big := func(n int) []byte { return make([]byte, n) }
	for _, tc := range []struct {
		field                      string
		nonce, userData, publicKey []byte
	}{
		{"nonce", big(MaxNonce + 1), nil, nil},
		{"user_data", nil, big(MaxUserData + 1), nil},
		{"public_key", nil, nil, big(MaxPublicKey + 1)},
	} {
		t.Run(tc.field, func(t *testing.T) {
			_, err := s.Attest(tc.nonce, tc.userData, tc.publicKey)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestSimulatedLeafRotation(t *testing.T) {
	clock := newFakeClock()
	s := newTestSimulated(t, "", clock)
	attest := func() (*x509.Certificate, *x509.Certificate) {
		t.Helper()
		doc, err := s.Attest(nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := verify(doc, s.RootPool(), clock.Now())
		if err != nil {
			t.Fatalf("document does not verify at %v: %v", clock.Now(), err)
		}
		inter, err := x509.ParseCertificate(d.CABundle[1])
		if err != nil {
			t.Fatal(err)
		}
		return leafOf(t, d), inter
	}

	leaf0, inter0 := attest()
	if got := leaf0.NotAfter.Sub(leaf0.NotBefore); got != 3*time.Hour {
		t.Errorf("leaf is valid for %v, want 3h", got)
	}

	clock.Set(testEpoch.Add(2 * time.Hour))
	if leaf, _ := attest(); !leaf.Equal(leaf0) {
		t.Error("leaf rotated with more than 30 minutes left")
	}

	clock.Set(testEpoch.Add(2*time.Hour + 31*time.Minute))
	leaf1, inter1 := attest()
	if leaf1.Equal(leaf0) {
		t.Error("leaf not rotated with less than 30 minutes left")
	}
	if !inter1.Equal(inter0) {
		t.Error("intermediate rotated along with the leaf")
	}
	if !leaf1.NotAfter.After(leaf0.NotAfter) {
		t.Errorf("new leaf expires %v, not after the old one's %v", leaf1.NotAfter, leaf0.NotAfter)
	}

	// Past the intermediate's lifetime both are replaced.
	clock.Set(testEpoch.Add(8 * 24 * time.Hour))
	leaf2, inter2 := attest()
	if inter2.Equal(inter0) || leaf2.Equal(leaf1) {
		t.Error("intermediate and leaf not rotated after 8 days")
	}
}

func TestSimulatedClosed(t *testing.T) {
	s := newTestSimulated(t, "", newFakeClock())
	buf := make([]byte, 64)
	if n, err := s.Read(buf); err != nil || n != len(buf) {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if bytes.Equal(buf, make([]byte, len(buf))) {
		t.Error("Read returned zeros")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Attest(nil, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Attest after Close: %v", err)
	}
	if _, err := s.Read(buf); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestSimulatedPCRs(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	start := func(exe string, appData string) map[int][]byte {
		t.Helper()
		s, err := NewSimulated(SimulatedOptions{StateDir: dir, Executable: exe, AppData: []byte(appData), Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.PCRs()
	}
	exeA, exeA2, exeB := writeFile(t, "binary A"), writeFile(t, "binary A"), writeFile(t, "binary B")
	base := start(exeA, "policy")

	// The documented formulas, computed independently.
	zero := make([]byte, 48)
	h := func(s string) []byte { d := sha512.Sum384([]byte(s)); return d[:] }
	pcr := func(measured string) []byte {
		d := sha512.Sum384(append(bytes.Clone(zero), h(measured)...))
		return d[:]
	}
	for i, want := range map[int][]byte{0: pcr("binary A"), 1: pcr("agentkeys simulated kernel"), 2: pcr("policy"), 3: zero, 4: zero, 8: zero, 15: zero} {
		if !bytes.Equal(base[i], want) {
			t.Errorf("PCR%d = %x, want %x", i, base[i], want)
		}
	}
	if len(base) != 16 {
		t.Errorf("%d PCRs, want 16", len(base))
	}

	for _, tc := range []struct {
		name    string
		exe     string
		appData string
		changed []int
	}{
		{"same bytes, other file", exeA2, "policy", nil},
		{"other executable", exeB, "policy", []int{0}},
		{"other AppData", exeA, "policy 2", []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := start(tc.exe, tc.appData)
			for i := range 16 {
				changed := !bytes.Equal(got[i], base[i])
				want := false
				for _, c := range tc.changed {
					want = want || c == i
				}
				if changed != want {
					t.Errorf("PCR%d changed = %v, want %v", i, changed, want)
				}
			}
		})
	}

	// PCRs returns a copy.
	s := newTestSimulated(t, "", clock)
	s.PCRs()[0][0] ^= 0xff
	delete(s.PCRs(), 1)
	if p := s.PCRs(); len(p) != 16 || !bytes.Equal(p[0], pcr("enclave binary v1")) {
		t.Error("PCRs() exposes internal state")
	}
}

func TestSimulatedDefaultExecutable(t *testing.T) {
	s, err := NewSimulated(SimulatedOptions{StateDir: t.TempDir(), Now: newFakeClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := SimulatedPCRs(exe, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.PCRs()[0], want[0]) {
		t.Error("PCR0 does not measure os.Executable() by default")
	}
}

func TestHashFileLimit(t *testing.T) {
	path := writeFile(t, "1234")
	for _, tc := range []struct {
		limit int64
		ok    bool
	}{{3, false}, {4, true}, {5, true}} {
		_, err := hashFile(path, tc.limit)
		if (err == nil) != tc.ok {
			t.Errorf("hashFile of 4 bytes with limit %d: err = %v", tc.limit, err)
		}
	}
}

func TestNewSimulatedNeedsStateDir(t *testing.T) {
	if _, err := NewSimulated(SimulatedOptions{Executable: writeFile(t, "x")}); err == nil {
		t.Error("NewSimulated accepted an empty StateDir")
	}
}

func BenchmarkSimulatedAttest(b *testing.B) {
	s := newTestSimulated(b, "", newFakeClock())
	nonce, userData, publicKey := make([]byte, 32), make([]byte, 64), make([]byte, 97)
	for b.Loop() {
		if _, err := s.Attest(nonce, userData, publicKey); err != nil {
			b.Fatal(err)
		}
	}
}
