package service

import (
	"strings"

	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/protocol"
)

// AuditAppend logs an entry the host asserts (an STS call's outcome, a
// refusal): with the enclave's time and host_asserted true, so that nobody
// reads it as something the enclave verified. The host's fields are checked
// for shape and size only.
func (s *Service) AuditAppend(req protocol.AuditAppendRequest) (protocol.AuditAppendResponse, error) {
	h := req.Entry
	e := auditlog.Entry{
		Version: auditlog.Version, Time: s.now().Unix(), Kind: h.Kind, Outcome: h.Outcome, Wallet: strings.ToLower(h.Wallet),
		SessionID: h.SessionID, Audience: h.Audience, ExpiresAt: h.ExpiresAt, Kid: h.Kid, JTI: h.JTI,
		HostAssertedWallet: h.HostAssertedWallet, HostAsserted: true, AccessKeyID: h.AccessKeyID, Detail: h.Detail,
	}
	b, err := e.Marshal()
	if err != nil {
		return protocol.AuditAppendResponse{}, protocol.Errorf(protocol.CodeBadRequest, "audit_append: %v", err)
	}
	s.audit.Ack(req.LogSize)
	logged, err := s.audit.Append(func(int64) ([]byte, error) { return b, nil })
	if err != nil {
		return protocol.AuditAppendResponse{}, err
	}
	return logged, nil
}

// AuditResume takes the host's log at start (see enclave/logtree): until it
// has, every mint is refused. The first that succeeds chooses the log this
// enclave keeps (req.Log): from then on Info reports that log's verifier key,
// and an audit_resume naming another log is refused.
func (s *Service) AuditResume(req protocol.AuditResumeRequest) (protocol.AuditResumeResponse, error) {
	resp, err := s.audit.Resume(req)
	if err != nil {
		return resp, err
	}
	size, _ := s.audit.State()
	s.log.Info("audit log resumed", "log", req.Log, "checkpoint_verifier_key", s.audit.VerifierKey(), "host_size", resp.Size, "size", size, "batches_returned", len(resp.Batches))
	return resp, nil
}
