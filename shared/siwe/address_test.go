package siwe

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"
)

// eip55Vectors reads testdata/eip55.txt: the test cases of EIP-55.
func eip55Vectors(t testing.TB) []string {
	t.Helper()
	f, err := os.Open("testdata/eip55.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) != 8 {
		t.Fatalf("read %d EIP-55 vectors, want 8", len(out))
	}
	return out
}

func TestEIP55Vectors(t *testing.T) {
	for _, addr := range eip55Vectors(t) {
		if err := ValidateAddress(addr); err != nil {
			t.Errorf("ValidateAddress(%s) = %v", addr, err)
		}
		digits := addr[2:]
		mixed := digits != strings.ToLower(digits) && digits != strings.ToUpper(digits)
		for _, in := range []string{addr, strings.ToLower(addr), "0x" + strings.ToUpper(digits)} {
			got, err := ChecksumAddress(in)
			if err != nil {
				t.Fatalf("ChecksumAddress(%s): %v", in, err)
			}
			// The all-caps and all-lower vectors are valid as written but are
			// not themselves in checksum form.
			if mixed && got != addr {
				t.Errorf("ChecksumAddress(%s) = %s, want %s", in, got, addr)
			}
			if err := ValidateAddress(got); err != nil {
				t.Errorf("ValidateAddress(ChecksumAddress(%s)) = %v", in, err)
			}
		}
	}
}

// TestEIP55FlippedCase flips the case of each letter of each mixed-case
// vector in turn: every such variant must fail the checksum.
func TestEIP55FlippedCase(t *testing.T) {
	tested := 0
	for _, addr := range eip55Vectors(t) {
		digits := addr[2:]
		if digits == strings.ToLower(digits) || digits == strings.ToUpper(digits) {
			continue
		}
		for i := 2; i < len(addr); i++ {
			c := addr[i]
			var flipped byte
			switch {
			case 'a' <= c && c <= 'f':
				flipped = c - 'a' + 'A'
			case 'A' <= c && c <= 'F':
				flipped = c - 'A' + 'a'
			default:
				continue
			}
			bad := addr[:i] + string(flipped) + addr[i+1:]
			err := ValidateAddress(bad)
			if !errors.Is(err, ErrChecksum) {
				t.Errorf("ValidateAddress(%s) = %v, want ErrChecksum", bad, err)
			}
			if errors.Is(err, ErrMalformed) {
				t.Errorf("ValidateAddress(%s) = %v, should not be ErrMalformed", bad, err)
			}
			tested++
		}
	}
	if tested < 40 {
		t.Fatalf("only %d flipped variants tested", tested)
	}
}

func TestAddressMalformed(t *testing.T) {
	for _, addr := range []string{
		"",
		"0x",
		"5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedd",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
		"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae ",
		" 0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
		"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaé",
	} {
		if err := ValidateAddress(addr); !errors.Is(err, ErrMalformed) {
			t.Errorf("ValidateAddress(%q) = %v, want ErrMalformed", addr, err)
		}
		if _, err := ChecksumAddress(addr); !errors.Is(err, ErrMalformed) {
			t.Errorf("ChecksumAddress(%q) = %v, want ErrMalformed", addr, err)
		}
	}
}
