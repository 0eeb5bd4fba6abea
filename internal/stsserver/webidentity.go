package stsserver

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

const (
	// maxDiscoveryBody and maxJWKSBody bound what is read from an issuer.
	maxDiscoveryBody = 64 << 10
	maxJWKSBody      = 1 << 20
	// futureLeeway is how far in the future nbf and iat may be.
	futureLeeway = time.Minute
)

func (s *Server) assumeRoleWithWebIdentity(req *request) (any, *stsError) {
	p, c := req.params, req.call

	// 1. Parameters.
	var v validation
	requested := commonParams(&v, p)
	checkLength(&v, optional(p, "WebIdentityToken"), "webIdentityToken", true, 4, maxTokenLen)
	if e := v.err(); e != nil {
		return nil, e
	}

	// 2. A JWS with an algorithm AWS accepts.
	tok, err := parseToken(p.Get("WebIdentityToken"))
	if err != nil {
		return nil, newError("InvalidIdentityToken", msgNotAJWT)
	}
	c.noteToken(tok)
	iss := c.Issuer

	// 3. An OIDC provider of the account, by exact issuer.
	prov, ok := s.providers[iss]
	if !ok {
		return nil, newError("InvalidIdentityToken", msgNoProvider, iss)
	}

	// 4. Its keys, fetched from the issuer now.
	keys, e := s.fetchJWKS(req.r.Context(), iss)
	if e != nil {
		return nil, e
	}
	candidates := tok.candidates(keys)
	if len(candidates) == 0 {
		return nil, newError("InvalidIdentityToken", msgNoVerificationKey)
	}

	// 5. The signature.
	if !slices.ContainsFunc(candidates, func(pub crypto.PublicKey) bool { return tok.verify(pub) }) {
		return nil, newError("InvalidIdentityToken", "The signature of the web identity token could not be verified with the identity provider's keys")
	}

	// 6. The audience must be a client ID of the provider.
	auds := tok.audiences()
	if !slices.ContainsFunc(auds, func(a string) bool { return prov.clientIDs[a] }) {
		return nil, newError("InvalidIdentityToken", msgIncorrectAud)
	}

	// 7. Times and subject.
	now := req.now.Unix()
	exp, hasExp, err := tok.timeClaim("exp")
	if err != nil || !hasExp {
		return nil, newError("InvalidIdentityToken", "The web identity token has no valid exp claim")
	}
	if now >= exp {
		return nil, newError("ExpiredTokenException", msgTokenExpired, now, exp)
	}
	for _, name := range []string{"nbf", "iat"} {
		at, _, err := tok.timeClaim(name)
		if err != nil {
			return nil, newError("InvalidIdentityToken", "The web identity token's %s claim is not a NumericDate", name)
		}
		if at > req.now.Add(futureLeeway).Unix() {
			return nil, newError("InvalidIdentityToken", "The web identity token's %s claim is in the future: %d, current date/time %d", name, at, now)
		}
	}
	if c.Subject == "" {
		return nil, newError("InvalidIdentityToken", "The web identity token has no sub claim")
	}

	// 8. Session tags and source identity.
	tags, err := tok.sessionTags()
	if err != nil {
		return nil, newError("InvalidIdentityToken", "%v", err)
	}
	c.SessionTags, c.TransitiveTagKeys = tags.values, tags.transitive
	var sourceIdentity string
	if _, ok := tok.claims[sourceIdentityClaim]; ok {
		si, ok := tok.stringClaim(sourceIdentityClaim)
		var v validation
		checkSourceIdentity(&v, &si)
		if !ok || v.err() != nil {
			return nil, newError("InvalidIdentityToken", "The %s claim must be 2 to 64 characters of [\\w+=,.@-]", sourceIdentityClaim)
		}
		sourceIdentity = si
	}
	c.SourceIdentity = sourceIdentity

	// 9. The role's trust policy.
	ro, ok := s.roles[p.Get("RoleArn")]
	if !ok || ro.ProviderIssuer != iss || !slices.Contains(auds, ro.Audience) {
		return nil, newError("AccessDenied", msgWebIdentityDeny)
	}
	if ro.RequireTag != "" {
		if _, ok := tags.lookup(ro.RequireTag); !ok {
			return nil, newError("AccessDenied", msgWebIdentityDeny)
		}
	}

	// 10. The duration.
	d, e := sessionDuration(requested, ro.MaxSessionDuration, false)
	if e != nil {
		return nil, e
	}

	providerARN := "arn:aws:iam::" + ro.account + ":" + prov.arnSuffix
	cr := s.issue(Credentials{
		Action:            "AssumeRoleWithWebIdentity",
		SessionName:       p.Get("RoleSessionName"),
		SourceIdentity:    sourceIdentity,
		PrincipalTags:     tags.values,
		TransitiveTagKeys: tags.transitive,
		Subject:           c.Subject,
		Issuer:            iss,
		Audience:          ro.Audience,
		Provider:          providerARN,
	}, ro, req.now, d)
	c.AccessKeyID = cr.AccessKeyID
	return webIdentityResult{
		Credentials:                 cr.xml(),
		SubjectFromWebIdentityToken: c.Subject,
		AssumedRoleUser:             xmlAssumedRoleUser{AssumedRoleID: cr.AssumedRoleID, Arn: cr.AssumedRoleARN},
		Provider:                    providerARN,
		Audience:                    ro.Audience,
		SourceIdentity:              sourceIdentity,
	}, nil
}

// noteToken records what a (not yet verified) token says.
func (c *Call) noteToken(tok *token) {
	c.Claims = tok.decoded()
	c.Subject, _ = tok.stringClaim("sub")
	c.Issuer, _ = tok.stringClaim("iss")
}

// fetchJWKS fetches the issuer's discovery document and then its JWKS. A
// failure to connect is IDPCommunicationError; any other failure is AWS's
// "Couldn't retrieve verification key" InvalidIdentityToken.
func (s *Server) fetchJWKS(ctx context.Context, iss string) ([]jwk, *stsError) {
	ctx, cancel := context.WithTimeout(ctx, s.idpTimeout)
	defer cancel()

	var discovery struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if e := s.getJSON(ctx, strings.TrimSuffix(iss, "/")+"/.well-known/openid-configuration", maxDiscoveryBody, &discovery); e != nil {
		return nil, e
	}
	if _, err := s.checkIssuerURL(discovery.JWKSURI); err != nil {
		return nil, newError("InvalidIdentityToken", msgNoVerificationKey)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if e := s.getJSON(ctx, discovery.JWKSURI, maxJWKSBody, &set); e != nil {
		return nil, e
	}
	return set.Keys, nil
}

func (s *Server) getJSON(ctx context.Context, url string, limit int64, v any) *stsError {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return newError("InvalidIdentityToken", msgNoVerificationKey)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		if unreachable(err) {
			return newError("IDPCommunicationError", "Couldn't connect to your identity provider at %s: %v", url, err)
		}
		return newError("InvalidIdentityToken", msgNoVerificationKey)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if unreachable(err) {
			return newError("IDPCommunicationError", "Couldn't read the answer of your identity provider at %s: %v", url, err)
		}
		return newError("InvalidIdentityToken", msgNoVerificationKey)
	}
	if resp.StatusCode != http.StatusOK || int64(len(body)) > limit || json.Unmarshal(body, v) != nil {
		return newError("InvalidIdentityToken", msgNoVerificationKey)
	}
	return nil
}

// unreachable reports whether err means the issuer could not be reached (a
// connection failure or a timeout), as opposed to an answer that was wrong.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return true
	}
	_, ok := errors.AsType[*net.OpError](err)
	return ok
}
