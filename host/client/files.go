package client

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/siwe"
	"github.com/agentkeys/broker/shared/strictjson"
)

// maxFileSize bounds the wallet and session files.
const maxFileSize = 64 << 10

// walletFile is the JSON form of a wallet key file.
type walletFile struct {
	Address    string `json:"address"`
	PrivateKey string `json:"private_key"`
}

// sessionFile is the JSON form of a session file: what the broker answered to
// the sign-in.
type sessionFile = httpapi.SessionResponse

// NewWalletFile creates a new secp256k1 wallet key and writes it to path with
// mode 0600, returning its EIP-55 checksummed address. It refuses to overwrite
// anything at path (the error then wraps fs.ErrExist). The directory must exist.
func NewWalletFile(path string) (address string, err error) {
	key, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		return "", fmt.Errorf("failed to generate a wallet key: %w", err)
	}
	defer key.Zero()
	address, err = siwe.ChecksumAddress(siwe.AddressOf(key.PubKey()))
	if err != nil {
		return "", fmt.Errorf("failed to compute the wallet address: %w", err)
	}
	raw := key.Serialize()
	defer clear(raw)
	data, err := json.MarshalIndent(walletFile{Address: address, PrivateKey: hex.EncodeToString(raw)}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("failed to encode the wallet file: %w", err)
	}
	defer clear(data)
	data = append(data, '\n')

	// O_EXCL: never replace an existing key, and never follow a symlink.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("refusing to overwrite %s: %w", path, fs.ErrExist)
	}
	if err != nil {
		return "", fmt.Errorf("failed to create the wallet file: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("failed to write the wallet file: %w", err)
	}
	return address, nil
}

// LoadWalletFile reads the wallet key file at path and returns the key and its
// EIP-55 checksummed address. It refuses a file that group or others may
// access, and one whose address does not match its key.
func LoadWalletFile(path string) (*secp256k1.PrivateKey, string, error) {
	data, err := readPrivateFile(path, "wallet file")
	if err != nil {
		return nil, "", err
	}
	defer clear(data)
	var w walletFile
	if err := strictjson.Decode(data, &w, strictjson.Limits{MaxSize: maxFileSize}); err != nil {
		return nil, "", fmt.Errorf("wallet file %s is not a JSON object of address and private_key%s", path, keyProblem(err))
	}
	key, err := parsePrivateKey(w.PrivateKey)
	if err != nil {
		return nil, "", fmt.Errorf("wallet file %s: %w", path, err)
	}
	address, err := siwe.ChecksumAddress(siwe.AddressOf(key.PubKey()))
	if err != nil {
		return nil, "", fmt.Errorf("failed to compute the wallet address: %w", err)
	}
	if w.Address != "" && !strings.EqualFold(w.Address, address) {
		return nil, "", fmt.Errorf("wallet file %s: its address %q is not its key's (%s)", path, sanitize(w.Address, 42), address)
	}
	return key, address, nil
}

// parsePrivateKey parses 64 hex digits (an optional 0x prefix) as a secp256k1
// private key in [1, n-1]. Its errors never quote the input.
func parsePrivateKey(s string) (*secp256k1.PrivateKey, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if s == "" {
		return nil, errors.New("private_key is missing")
	}
	if len(s) != 64 {
		return nil, errors.New("private_key must be 64 hex digits")
	}
	raw, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("private_key must be 64 hex digits")
	}
	defer clear(raw)
	var k secp256k1.ModNScalar
	if overflow := k.SetByteSlice(raw); overflow || k.IsZero() {
		return nil, errors.New("private_key is not a valid secp256k1 key")
	}
	return secp256k1.NewPrivateKey(&k), nil
}

// SaveSession writes s to path with mode 0600, atomically: readers see the old
// file or the new one, never a part. The directory must exist.
func SaveSession(path string, s *Session) error {
	if s == nil || s.Token == "" {
		return errors.New("no session to save")
	}
	data, err := json.Marshal(sessionFile{Session: s.Token, Wallet: s.Wallet, Expiration: s.Expiration.Unix()})
	if err != nil {
		return fmt.Errorf("failed to encode the session: %w", err)
	}
	defer clear(data)
	data = append(data, '\n')
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("failed to save the session: %w", err)
	}
	return nil
}

// LoadSession reads the session file at path. It refuses a file that group or
// others may access. It does not check the expiration; see Session.Expiration.
func LoadSession(path string) (*Session, error) {
	data, err := readPrivateFile(path, "session file")
	if err != nil {
		return nil, err
	}
	defer clear(data)
	var v sessionFile
	if err := strictjson.Decode(data, &v, strictjson.Limits{MaxSize: maxFileSize}); err != nil {
		return nil, fmt.Errorf("session file %s is not a JSON object of session, wallet and expiration%s", path, keyProblem(err))
	}
	if v.Session == "" || checkToken(v.Session) != nil {
		return nil, fmt.Errorf("session file %s holds no well-formed session token", path)
	}
	return &Session{Token: v.Session, Wallet: v.Wallet, Expiration: time.Unix(v.Expiration, 0)}, nil
}

// keyProblem names the key that made a file fail strict decoding, when one
// did: only a key's name, never a value (the files hold credentials).
func keyProblem(err error) string {
	var se *strictjson.Error
	if errors.As(err, &se) && se.Path != "" {
		return fmt.Sprintf(" (%s: %s)", sanitize(se.Path, 80), se.Msg)
	}
	return ""
}

// readPrivateFile reads a small credential file, refusing one that group or
// others may access. A missing file gives an error that wraps fs.ErrNotExist.
func readPrivateFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the %s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("failed to stat the %s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	// Windows has no such mode bits; its ACLs are the user's to set.
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%s %s is accessible by group or others (mode %04o); run: chmod 600 %s", what, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the %s: %w", what, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s %s is larger than %d bytes", what, path, maxFileSize)
	}
	return data, nil
}

// WriteFileAtomic writes data to a temporary file in path's directory, with
// mode perm from the start, syncs it and renames it over path: a reader (such as
// an AWS SDK reading a token file) sees the old content or the new, never a part.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
