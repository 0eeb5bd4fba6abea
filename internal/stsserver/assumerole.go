package stsserver

import (
	"maps"
	"slices"
	"strings"
)

func (s *Server) assumeRole(req *request) (any, *stsError) {
	p, c := req.params, req.call

	// The caller, then the parameters.
	caller, e := s.authenticate(req)
	if e != nil {
		return nil, e
	}
	c.CallerAccessKeyID, c.Caller = caller.accessKeyID, caller.arn
	var v validation
	requested := commonParams(&v, p)
	sourceIdentity := optional(p, "SourceIdentity")
	checkSourceIdentity(&v, sourceIdentity)
	tags, e := queryTags(&v, p)
	if e != nil {
		return nil, e
	}

	// Role chaining: transitive tags and the source identity carry over and
	// cannot be changed.
	if sess := caller.session; sess != nil {
		for _, k := range sess.TransitiveTagKeys {
			if _, ok := tags.lookup(k); ok {
				return nil, newError("InvalidParameterValue", "Session tag %q is transitive from the calling session and cannot be set again", k)
			}
		}
		inherited := sessionTags{}
		for _, k := range sess.TransitiveTagKeys {
			inherited.add(k, sess.PrincipalTags[k])
		}
		for _, k := range tags.keys {
			inherited.add(k, tags.values[k])
		}
		transitive := append(slices.Clone(sess.TransitiveTagKeys), tags.transitive...)
		inherited.transitive = transitive
		tags = inherited
		if sess.SourceIdentity != "" {
			if sourceIdentity != nil && *sourceIdentity != sess.SourceIdentity {
				return nil, newError("AccessDenied", msgAssumeRoleDeny, caller.arn, p.Get("RoleArn"))
			}
			sourceIdentity = &sess.SourceIdentity
		}
	}
	c.SessionTags, c.TransitiveTagKeys = maps.Clone(tags.values), tags.transitive
	if sourceIdentity != nil {
		c.SourceIdentity = *sourceIdentity
	}

	// The role's trust policy.
	ro, ok := s.roles[p.Get("RoleArn")]
	if !ok || !ro.trusts(caller) {
		return nil, newError("AccessDenied", msgAssumeRoleDeny, caller.arn, p.Get("RoleArn"))
	}
	if ro.RequireTag != "" {
		if _, ok := tags.lookup(ro.RequireTag); !ok {
			return nil, newError("AccessDenied", msgAssumeRoleDeny, caller.arn, ro.ARN)
		}
	}
	d, e := sessionDuration(requested, ro.MaxSessionDuration, caller.session != nil)
	if e != nil {
		return nil, e
	}

	cr := s.issue(Credentials{
		Action:            "AssumeRole",
		SessionName:       p.Get("RoleSessionName"),
		SourceIdentity:    c.SourceIdentity,
		PrincipalTags:     tags.values,
		TransitiveTagKeys: tags.transitive,
		Caller:            caller.arn,
	}, ro, req.now, d)
	c.AccessKeyID = cr.AccessKeyID
	return assumeRoleResult{
		SourceIdentity:  cr.SourceIdentity,
		AssumedRoleUser: xmlAssumedRoleUser{AssumedRoleID: cr.AssumedRoleID, Arn: cr.AssumedRoleARN},
		Credentials:     cr.xml(),
	}, nil
}

// trusts reports whether the role's trust policy lets the caller AssumeRole.
func (ro *role) trusts(caller *principal) bool {
	if len(ro.TrustedPrincipals) == 0 {
		return caller.session == nil
	}
	for _, t := range ro.TrustedPrincipals {
		if t == caller.arn || (caller.session != nil && t == caller.session.RoleARN) {
			return true
		}
		// A role's account root ("arn:aws:iam::ACCOUNT:root") trusts every
		// principal of that account.
		if strings.HasSuffix(t, ":root") && strings.TrimSuffix(strings.TrimPrefix(t, "arn:aws:iam::"), ":root") == caller.account {
			return true
		}
	}
	return false
}

func (s *Server) getCallerIdentity(req *request) (any, *stsError) {
	caller, e := s.authenticate(req)
	if e != nil {
		return nil, e
	}
	req.call.CallerAccessKeyID, req.call.Caller = caller.accessKeyID, caller.arn
	return callerIdentityResult{Arn: caller.arn, UserID: caller.userID, Account: caller.account}, nil
}
