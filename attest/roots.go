package attest

import (
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// AWSRootSHA256 is the SHA-256 fingerprint of the DER of the AWS Nitro
// Enclaves root certificate (G1), as AWS publishes it at
// https://docs.aws.amazon.com/enclaves/latest/user/verify-root.html.
const AWSRootSHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

// AWSRootName names the AWS root in reports.
const AWSRootName = "AWS Nitro Enclaves root G1"

// awsRootPEM is the AWS Nitro Enclaves root G1, the same PEM github.com/hf/nitrite
// embeds (nitrite.DefaultCARoots). It is checked against AWSRootSHA256 at init.
//
//go:embed aws-nitro-root-g1.crt
var awsRootPEM []byte

var awsRoot = mustAWSRoot()

func mustAWSRoot() *x509.Certificate {
	c, err := parseRoot(awsRootPEM)
	if err != nil {
		panic("attest: embedded AWS root: " + err.Error())
	}
	if fp := fingerprint(c); fp != AWSRootSHA256 {
		panic("attest: embedded AWS root has fingerprint " + fp + ", want " + AWSRootSHA256)
	}
	return c
}

// AWSRoot returns the pinned AWS Nitro Enclaves root G1.
func AWSRoot() *x509.Certificate { return awsRoot }

// AWSRootPool returns a pool holding only the AWS root.
func AWSRootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(awsRoot)
	return p
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// ParseRootPEM parses a PEM file holding exactly one CA certificate, such as
// the simulated root `make dev` writes to .agentkeys-dev/simulated-root.pem.
func ParseRootPEM(b []byte) (*x509.Certificate, error) { return parseRoot(b) }

func parseRoot(b []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM CERTIFICATE")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block: give exactly one root certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the root certificate: %w", err)
	}
	if !c.IsCA {
		return nil, errors.New("the certificate is not a CA certificate")
	}
	return c, nil
}
