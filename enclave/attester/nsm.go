//go:build linux

package attester

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// nsmPCRCount is how many PCRs OpenNSM reads. The first 16 are locked before
// the enclave application starts, and they are the ones real documents carry.
const nsmPCRCount = 16

// nsmSession is the part of *nsm.Session the nitro attester uses, so that the
// request/response handling can be tested without /dev/nsm.
type nsmSession interface {
	Send(req request.Request) (response.Response, error)
	Close() error
}

// nitro is the Attester backed by /dev/nsm.
type nitro struct {
	// mu is held for reading around every Send and for writing by Close:
	// hf/nsm allows concurrent Sends but not a Send concurrent with Close,
	// and a Send after Close dereferences a nil pool.
	mu   sync.RWMutex
	sess nsmSession // nil once closed
	pcrs map[int][]byte
}

// OpenNSM opens /dev/nsm and reads PCRs 0 to 15. It fails outside a Nitro
// enclave, where there is no /dev/nsm.
func OpenNSM() (Attester, error) {
	sess, err := nsm.OpenDefaultSession()
	if err != nil {
		// On error hf/nsm returns a session with no file; nothing to close.
		return nil, fmt.Errorf("failed to open the Nitro Secure Module (/dev/nsm): %w", err)
	}
	n, err := newNitro(sess)
	if err != nil {
		sess.Close()
		return nil, err
	}
	return n, nil
}

func newNitro(sess nsmSession) (*nitro, error) {
	pcrs := make(map[int][]byte, nsmPCRCount)
	for i := range nsmPCRCount {
		res, err := sess.Send(&request.DescribePCR{Index: uint16(i)})
		if err != nil {
			return nil, fmt.Errorf("failed to read PCR%d from the NSM: %w", i, err)
		}
		if res.Error != "" {
			return nil, fmt.Errorf("failed to read PCR%d from the NSM: error code %s", i, res.Error)
		}
		if res.DescribePCR == nil {
			return nil, fmt.Errorf("failed to read PCR%d from the NSM: response has no DescribePCR", i)
		}
		if l := len(res.DescribePCR.Data); l != 32 && l != 48 && l != 64 {
			return nil, fmt.Errorf("failed to read PCR%d from the NSM: value is %d bytes", i, l)
		}
		pcrs[i] = bytes.Clone(res.DescribePCR.Data)
	}
	return &nitro{sess: sess, pcrs: pcrs}, nil
}

func (n *nitro) Attest(nonce, userData, publicKey []byte) ([]byte, error) {
	nonce, userData, publicKey, err := checkInputs(nonce, userData, publicKey)
	if err != nil {
		return nil, err
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.sess == nil {
		return nil, ErrClosed
	}
	res, err := n.sess.Send(&request.Attestation{Nonce: nonce, UserData: userData, PublicKey: publicKey})
	if err != nil {
		return nil, fmt.Errorf("failed to request an attestation document from the NSM: %w", err)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("the NSM refused the attestation request: error code %s", res.Error)
	}
	if res.Attestation == nil || len(res.Attestation.Document) == 0 {
		return nil, errors.New("the NSM returned no attestation document")
	}
	// Clone: the response may alias a buffer hf/nsm reuses.
	return bytes.Clone(res.Attestation.Document), nil
}

// Read fills p from NSM GetRandom, which returns a few hundred bytes per
// call, looping until p is full.
func (n *nitro) Read(p []byte) (int, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.sess == nil {
		return 0, ErrClosed
	}
	filled := 0
	for filled < len(p) {
		res, err := n.sess.Send(&request.GetRandom{})
		if err != nil {
			return filled, fmt.Errorf("failed to get random bytes from the NSM: %w", err)
		}
		if res.Error != "" {
			return filled, fmt.Errorf("failed to get random bytes from the NSM: error code %s", res.Error)
		}
		if res.GetRandom == nil || len(res.GetRandom.Random) == 0 {
			return filled, errors.New("failed to get random bytes from the NSM: empty response")
		}
		filled += copy(p[filled:], res.GetRandom.Random)
	}
	return filled, nil
}

func (n *nitro) Mode() string { return ModeNitro }

func (n *nitro) PCRs() map[int][]byte { return copyPCRs(n.pcrs) }

func (n *nitro) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess == nil {
		return nil
	}
	err := n.sess.Close()
	n.sess = nil
	return err
}
