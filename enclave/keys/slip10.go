package keys

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"strconv"
	"strings"
)

// Curve selects one of the two SLIP-0010 trees. The trees are independent:
// the same seed and path give unrelated keys on the two curves.
type Curve int

const (
	// CurveP256 is the SLIP-0010 "nist256p1" tree (NIST P-256, secp256r1).
	CurveP256 Curve = iota + 1
	// CurveEd25519 is the SLIP-0010 "ed25519" tree. Its keys are Ed25519
	// seeds (RFC 8032 private keys), not scalars.
	CurveEd25519
)

// String returns the SLIP-0010 name of the curve.
func (c Curve) String() string {
	switch c {
	case CurveP256:
		return "nist256p1"
	case CurveEd25519:
		return "ed25519"
	}
	return "Curve(" + strconv.Itoa(int(c)) + ")"
}

// masterSecret is the HMAC key of SLIP-0010 master key generation.
func (c Curve) masterSecret() ([]byte, error) {
	switch c {
	case CurveP256:
		return []byte("Nist256p1 seed"), nil
	case CurveEd25519:
		return []byte("ed25519 seed"), nil
	}
	return nil, fmt.Errorf("keys: unknown curve %v", c)
}

// Hardened is the first hardened index (2^31). Index i written i' in a path
// is Hardened + i.
const Hardened uint32 = 0x80000000

// Seed lengths accepted by [Master], from SLIP-0010 (128 to 512 bits).
const (
	minSeedSize = 16
	maxSeedSize = 64
)

// ErrNotHardened is wrapped by the error [Node.Child] and [Derive] return for
// an index below [Hardened].
var ErrNotHardened = errors.New("keys: index is not hardened")

// Node is an extended private key: a private key and its chain code.
//
// For [CurveP256] Key is the big-endian scalar, in [1, n-1]. For
// [CurveEd25519] Key is the 32-byte Ed25519 seed (the input of
// ed25519.NewKeyFromSeed).
//
// A Node is secret. It formats as "keys.Node{REDACTED}" with every fmt verb
// and as "REDACTED" in log/slog; do not marshal it with encoding/json. Callers
// that are done with a Node may clear it with clear(n.Key[:]) and
// clear(n.ChainCode[:]).
type Node struct {
	Key       [32]byte
	ChainCode [32]byte
}

// Format keeps key material out of fmt output, whatever the verb.
func (Node) Format(f fmt.State, verb rune) { f.Write([]byte("keys.Node{REDACTED}")) }

// LogValue keeps key material out of log/slog output.
func (Node) LogValue() slog.Value { return slog.StringValue("REDACTED") }

func (n *Node) wipe() {
	clear(n.Key[:])
	clear(n.ChainCode[:])
}

// Master returns the SLIP-0010 master node of curve c for seed, which must be
// 16 to 64 bytes long.
//
// For nist256p1, if the left half I_L of I = HMAC-SHA512("Nist256p1 seed", seed)
// is zero or not below the group order n, Master repeats with
// I = HMAC-SHA512("Nist256p1 seed", I) until it is valid; a retry happens with
// probability about 2^-32. For ed25519 every I_L is a valid key.
func Master(c Curve, seed []byte) (Node, error) {
	secret, err := c.masterSecret()
	if err != nil {
		return Node{}, err
	}
	if len(seed) < minSeedSize || len(seed) > maxSeedSize {
		return Node{}, fmt.Errorf("keys: seed is %d bytes, SLIP-0010 requires %d to %d", len(seed), minSeedSize, maxSeedSize)
	}
	var i [64]byte
	defer clear(i[:])
	hmacSHA512(&i, secret, seed)
	if c == CurveP256 {
		for !validScalar((*[32]byte)(i[:32])) {
			hmacSHA512(&i, secret, i[:])
		}
	}
	var n Node
	copy(n.Key[:], i[:32])
	copy(n.ChainCode[:], i[32:])
	return n, nil
}

// Child returns the hardened child of n at index, which must be at least
// [Hardened]. n must be a node of curve c.
//
// For nist256p1 the child key is I_L + k_par mod n. If I_L is not below n, or
// the sum is zero, Child retries with
// I = HMAC-SHA512(c_par, 0x01 || I_R || ser32(index)), as SLIP-0010 requires.
// For ed25519 the child key is I_L itself.
func (n Node) Child(c Curve, index uint32) (Node, error) {
	defer n.wipe() // n is a copy; the caller's Node is untouched.
	if _, err := c.masterSecret(); err != nil {
		return Node{}, err
	}
	if index < Hardened {
		if c == CurveEd25519 {
			return Node{}, fmt.Errorf("%w: %d (SLIP-0010 defines only hardened derivation for ed25519; use %d')", ErrNotHardened, index, index)
		}
		return Node{}, fmt.Errorf("%w: %d (non-hardened derivation is not supported for %v; use %d')", ErrNotHardened, index, c, index)
	}
	if c == CurveP256 && !validScalar(&n.Key) {
		return Node{}, errors.New("keys: parent key is not a valid nist256p1 private key")
	}

	// data = 0x00 || ser256(k_par) || ser32(index).
	var data [37]byte
	defer clear(data[:])
	copy(data[1:33], n.Key[:])
	binary.BigEndian.PutUint32(data[33:], index)

	var i [64]byte
	defer clear(i[:])
	hmacSHA512(&i, n.ChainCode[:], data[:])

	if c == CurveEd25519 {
		var child Node
		copy(child.Key[:], i[:32])
		copy(child.ChainCode[:], i[32:])
		return child, nil
	}
	return p256Child(&n, index, &i), nil
}

// p256Child finishes nist256p1 hardened derivation of parent at index, given
// the first I = HMAC-SHA512(c_par, 0x00 || ser256(k_par) || ser32(index)).
// It overwrites i. It is separate from Child so that tests can reach the retry
// branch, which no published hardened vector does.
func p256Child(parent *Node, index uint32, i *[64]byte) Node {
	var data [37]byte
	defer clear(data[:])
	binary.BigEndian.PutUint32(data[33:], index)
	var child Node
	for {
		il := (*[32]byte)(i[:32])
		if lessThanN(il) {
			addModN(&child.Key, il, &parent.Key)
			if !isZero(&child.Key) {
				copy(child.ChainCode[:], i[32:])
				return child
			}
		}
		// I_L >= n or k_i = 0: I = HMAC-SHA512(c_par, 0x01 || I_R || ser32(index)).
		data[0] = 0x01
		copy(data[1:33], i[32:])
		hmacSHA512(i, parent.ChainCode[:], data[:])
	}
}

// Derive returns the node at path (every index hardened) below the master
// node of seed on curve c. An empty path returns the master node.
func Derive(c Curve, seed []byte, path []uint32) (Node, error) {
	n, err := Master(c, seed)
	if err != nil {
		return Node{}, err
	}
	for _, index := range path {
		child, err := n.Child(c, index)
		n.wipe()
		if err != nil {
			return Node{}, err
		}
		n = child
	}
	return n, nil
}

// ParsePath parses a SLIP-0010 path such as "m/0'/1'" or "m/0H/1H". "m" alone
// is the empty path. Indices are decimal, below 2^31, without leading zeros;
// a trailing ' or H marks a hardened index. ParsePath accepts non-hardened
// indices; [Derive] rejects them.
func ParsePath(s string) ([]uint32, error) {
	rest, ok := strings.CutPrefix(s, "m")
	if !ok {
		return nil, fmt.Errorf("keys: path %q does not start with \"m\"", s)
	}
	path := []uint32{}
	if rest == "" {
		return path, nil
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok {
		return nil, fmt.Errorf("keys: path %q: expected \"/\" after \"m\"", s)
	}
	for seg := range strings.SplitSeq(rest, "/") {
		digits, hardened := strings.CutSuffix(seg, "'")
		if !hardened {
			digits, hardened = strings.CutSuffix(seg, "H")
		}
		if digits == "" || (len(digits) > 1 && digits[0] == '0') {
			return nil, fmt.Errorf("keys: path %q: invalid index %q", s, seg)
		}
		v, err := strconv.ParseUint(digits, 10, 31)
		if err != nil {
			return nil, fmt.Errorf("keys: path %q: invalid index %q (want a decimal below 2^31)", s, seg)
		}
		index := uint32(v)
		if hardened {
			index |= Hardened
		}
		path = append(path, index)
	}
	return path, nil
}

func hmacSHA512(out *[64]byte, key, data []byte) {
	h := hmac.New(sha512.New, key)
	h.Write(data)
	h.Sum(out[:0])
}

// Arithmetic modulo the P-256 group order n on 32-byte big-endian values,
// with 64-bit limbs, least significant first. addModN is constant time; the
// validity checks branch only on whether a value is valid, which SLIP-0010's
// retry rules make observable anyway.

// p256N is n = ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551.
var p256N = [4]uint64{0xf3b9cac2fc632551, 0xbce6faada7179e84, 0xffffffffffffffff, 0xffffffff00000000}

func loadLimbs(b *[32]byte) [4]uint64 {
	return [4]uint64{
		binary.BigEndian.Uint64(b[24:]),
		binary.BigEndian.Uint64(b[16:]),
		binary.BigEndian.Uint64(b[8:]),
		binary.BigEndian.Uint64(b[0:]),
	}
}

// subN returns a - n (mod 2^256) and the borrow, which is 1 iff a < n.
func subN(a [4]uint64) ([4]uint64, uint64) {
	var d [4]uint64
	var b uint64
	for k := range d {
		d[k], b = bits.Sub64(a[k], p256N[k], b)
	}
	return d, b
}

func lessThanN(b *[32]byte) bool {
	_, borrow := subN(loadLimbs(b))
	return borrow == 1
}

func isZero(b *[32]byte) bool {
	var acc byte
	for _, v := range b {
		acc |= v
	}
	return acc == 0
}

// validScalar reports whether b is a valid P-256 private key, 0 < b < n.
func validScalar(b *[32]byte) bool {
	return !isZero(b) && lessThanN(b)
}

// addModN sets out = a + b mod n. a and b must be below n.
func addModN(out, a, b *[32]byte) {
	x, y := loadLimbs(a), loadLimbs(b)
	var s [4]uint64
	var carry uint64
	for k := range s {
		s[k], carry = bits.Add64(x[k], y[k], carry)
	}
	// a + b < 2n < 2^257, so one conditional subtraction reduces it. Use
	// s - n when the sum overflowed 2^256 or s >= n.
	d, borrow := subN(s)
	mask := -(carry | (borrow ^ 1))
	for k := range s {
		binary.BigEndian.PutUint64(out[24-8*k:], d[k]&mask|s[k]&^mask)
	}
	clear(x[:])
	clear(y[:])
	clear(s[:])
	clear(d[:])
}
