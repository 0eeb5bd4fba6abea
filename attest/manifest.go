package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

// VerifyManifest checks that the document binds exactly these manifest bytes
// (its user_data is their SHA-256) and that they parse and validate as a key
// manifest. It returns the manifest only if both hold. A manifest whose
// issuer_origin is "host" adds a warning: the host serves discovery and the
// JWKS, so it could publish a key of its own; watch the JWKS.
func VerifyManifest(d *Document, manifestBytes []byte) (*manifest.Manifest, Report) {
	var r Report
	sum := sha256.Sum256(manifestBytes)
	switch {
	case d == nil:
		r.fail("user_data", "no verified document to compare the manifest with")
		return nil, r
	case len(d.UserData) != sha256.Size:
		r.fail("user_data", "user_data is %d bytes (%s), not the 32-byte SHA-256 of a manifest: not an agentkeys document", len(d.UserData), hexOrNull(d.UserData))
		return nil, r
	case !bytes.Equal(d.UserData, sum[:]):
		r.fail("user_data", "user_data %x is not SHA-256(manifest) %x: the enclave did not attest this manifest", d.UserData, sum)
		return nil, r
	}
	r.pass("user_data", "%x = SHA-256 of the %d manifest bytes", d.UserData, len(manifestBytes))
	m, err := manifest.Parse(manifestBytes)
	if err != nil {
		r.fail("manifest", "the attested manifest does not validate: %v", err)
		return nil, r
	}
	r.pass("manifest", "version %d, mode %s, issuer %s, issuer_origin %s, kids %s, signer %s (%s)",
		m.Version, m.Mode, m.Issuer, m.IssuerOrigin, strings.Join(sortedKids(m), ","), m.Signer().Kid, m.Signer().Label)
	if m.IssuerOrigin == manifest.OriginHost {
		r.warn("issuer origin", "issuer_origin is host: the host, not the enclave, serves discovery and the JWKS and could add a key of its own; run agentkeys-attest watch")
	} else {
		r.pass("issuer origin", "issuer_origin is %s", m.IssuerOrigin)
	}
	return &m, r
}

// CheckIssuerTLSKey checks, for a manifest whose issuer_origin is enclave, that
// the certificate a TLS client was served at the issuer URL (leaf) carries the
// TLS key the manifest names: then TLS for the issuer origin ends in the
// attested enclave, and the discovery document and JWKS came from it. With
// issuer_origin host there is no key to compare (the check is skipped; the
// manifest check already warned).
func CheckIssuerTLSKey(m *manifest.Manifest, leaf *x509.Certificate) Check {
	const name = "issuer tls key"
	if m.IssuerOrigin != manifest.OriginEnclave {
		return Check{Name: name, Status: StatusSkip, Detail: "issuer_origin is " + m.IssuerOrigin + ": the manifest names no TLS key for the issuer origin"}
	}
	if leaf == nil {
		return Check{Name: name, Status: StatusFail, Detail: "the issuer URL was not served over TLS, but the manifest says the enclave terminates TLS for it"}
	}
	der, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		return Check{Name: name, Status: StatusFail, Detail: fmt.Sprintf("the issuer URL's certificate key does not encode: %v", err)}
	}
	sum := sha256.Sum256(der)
	got := hex.EncodeToString(sum[:])
	if got != m.IssuerOriginTLSSPKISHA256 {
		return Check{Name: name, Status: StatusFail, Detail: fmt.Sprintf("the certificate served at the issuer URL (subject %q, issuer %q) carries key %s, not the enclave's %s from the manifest: something other than the attested enclave terminates TLS for the issuer origin and could serve any JWKS",
			leaf.Subject.CommonName, leaf.Issuer.CommonName, got, m.IssuerOriginTLSSPKISHA256)}
	}
	return Check{Name: name, Status: StatusPass, Detail: fmt.Sprintf("the issuer URL's certificate (issuer %q, valid until %s) carries the enclave's key %s", leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format("2006-01-02"), got)}
}

func sortedKids(m manifest.Manifest) []string {
	var kids []string
	for _, k := range m.IssuerKeys {
		kids = append(kids, k.Kid)
	}
	slices.Sort(kids)
	return kids
}

// CheckJWKS checks that a JWKS holds exactly the manifest's keys: the same
// kids, each with the same key, none twice.
func CheckJWKS(m *manifest.Manifest, set jwk.Set) Check {
	c := Check{Name: "jwks", Status: StatusFail}
	want := m.Kids()
	seen := map[string]bool{}
	var extra, changed []string
	for _, k := range set.Keys {
		if seen[k.Kid] {
			c.Detail = fmt.Sprintf("the JWKS lists kid %q twice", k.Kid)
			return c
		}
		seen[k.Kid] = true
		mk, ok := want[k.Kid]
		switch {
		case !ok:
			extra = append(extra, k.Kid)
		case k.Kty != mk.Kty || k.Crv != mk.Crv || k.X != mk.X || k.Y != mk.Y:
			changed = append(changed, k.Kid)
		}
	}
	var missing []string
	for kid := range want {
		if !seen[kid] {
			missing = append(missing, kid)
		}
	}
	slices.Sort(missing)
	switch {
	case len(extra) > 0:
		c.Detail = fmt.Sprintf("the JWKS serves kids %s that the attested manifest does not list: tokens they sign were not signed by the enclave", strings.Join(extra, ","))
	case len(changed) > 0:
		c.Detail = fmt.Sprintf("the JWKS key for kids %s differs from the manifest's", strings.Join(changed, ","))
	case len(missing) > 0:
		c.Detail = fmt.Sprintf("the JWKS lacks the manifest's kids %s", strings.Join(missing, ","))
	default:
		c.Status = StatusPass
		c.Detail = fmt.Sprintf("kids %s = the manifest's", strings.Join(sortedKids(*m), ","))
	}
	return c
}

// CheckJWT verifies a compact ES256 JWT with the manifest key its kid names
// and returns its iss claim. Time claims are not checked: an auditor may
// verify an old token.
func CheckJWT(m *manifest.Manifest, token string) (string, Check) {
	c := Check{Name: "jwt", Status: StatusFail}
	keys := m.Kids()
	var kid string
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(token), claims, func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		k, ok := keys[kid]
		if !ok {
			return nil, fmt.Errorf("kid %q is not a manifest key", kid)
		}
		return k.PublicKey()
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		c.Detail = fmt.Sprintf("the JWT does not verify with a manifest key: %v", err)
		return "", c
	}
	iss, err := claims.GetIssuer()
	if err != nil || iss == "" {
		c.Detail = "the JWT has no iss claim"
		return "", c
	}
	c.Status = StatusPass
	c.Detail = fmt.Sprintf("ES256 signature verifies with manifest kid %s; iss %s", kid, iss)
	return iss, c
}

// IssuerSource is one place that names the issuer, for CheckIssuer.
type IssuerSource struct {
	Name, Issuer string
}

// CheckIssuer checks that every source names the manifest's issuer.
func CheckIssuer(m *manifest.Manifest, sources ...IssuerSource) Check {
	c := Check{Name: "issuer", Status: StatusFail}
	if len(sources) == 0 {
		c.Status = StatusSkip
		c.Detail = fmt.Sprintf("manifest issuer %s; no discovery document or JWT to compare it with", m.Issuer)
		return c
	}
	parts := []string{fmt.Sprintf("manifest %q", m.Issuer)}
	for _, s := range sources {
		if s.Issuer != m.Issuer {
			c.Detail = fmt.Sprintf("the %s names issuer %q, the attested manifest %q", s.Name, s.Issuer, m.Issuer)
			return c
		}
		parts = append(parts, fmt.Sprintf("%s %q", s.Name, s.Issuer))
	}
	c.Status = StatusPass
	c.Detail = strings.Join(parts, " = ")
	return c
}

// CheckAuditKey checks that the audit log verifier key the API serves
// (httpapi.PathAuditVerifierKey; fetchErr if it could not be read) is one of
// the attested enclave's: the manifest's checkpoint_verifier_key, or that key
// under the name of one of its named logs (auditlog.VerifierKeyLog).
func CheckAuditKey(m *manifest.Manifest, served string, fetchErr error) Check {
	const name = "audit key"
	if fetchErr != nil {
		return Check{Name: name, Status: StatusWarn, Detail: fmt.Sprintf("the audit log's verifier key was not compared with the manifest: %v", fetchErr)}
	}
	log, err := auditlog.VerifierKeyLog(m.CheckpointVerifierKey, served)
	if err != nil {
		return Check{Name: name, Status: StatusFail, Detail: fmt.Sprintf("the API serves %.200q as the audit log's verifier key, not a key of the attested enclave (%v): checkpoints it verifies were not signed by the enclave", served, err)}
	}
	return Check{Name: name, Status: StatusPass, Detail: fmt.Sprintf("%s is the manifest's checkpoint key for %s", served, LogLabel(log))}
}
