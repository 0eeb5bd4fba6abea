// Package awscreds turns a wallet's identity into temporary AWS credentials with
// AWS STS, in one of two modes.
//
// # web-identity (default)
//
// The host has the enclave mint a JWT for the wallet and calls
// AssumeRoleWithWebIdentity with it. The call is anonymous: the host holds no
// AWS secret at all. STS verifies the JWT against the issuer's discovery
// document and JWKS, and takes the session tag agentkeys_user_wallet from the
// JWT's https://aws.amazon.com/tags claim.
//
// # assume-role
//
// For accounts that have not registered the OIDC provider yet: AssumeRole with
// the SDK's default credential chain (or the legacy static pair
// DAEMON_ACCESS_KEY_ID / DAEMON_SECRET_ACCESS_KEY), the session tag
// agentkeys_user_wallet = wallet (transitive) and SourceIdentity = wallet.
//
// # Errors and retries
//
// STS errors come back as *STSError with the STS code and, where the cause is
// usually the operator's configuration, a hint. Its Code, Message and Hint are
// fit for the client; its Err (for the log) is not, since a transport error
// names the endpoint's address. IDPCommunicationError and the
// InvalidIdentityToken "couldn't retrieve verification key" case are retried
// with bounded backoff (STS could not reach the issuer, which is often
// transient); nothing else is retried. The SDK's own retries are off so that
// this package alone decides.
//
// # Lifetimes
//
// The bounds on DurationSeconds are the enclave policy's (shared/policy
// aws_duration_*), resolved by the caller; this package passes the duration on.
package awscreds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/agentkeys/broker/shared/claims"
)

// Mode selects how credentials are obtained.
type Mode string

// The modes.
const (
	ModeWebIdentity Mode = "web-identity"
	ModeAssumeRole  Mode = "assume-role"
)

// TagKey is the session tag that carries the wallet.
const TagKey = claims.WalletTag

// Config configures a Broker.
type Config struct {
	Mode     Mode
	RoleARN  string
	Region   string
	Endpoint string // BROKER_STS_ENDPOINT: a VPC or FIPS endpoint, or a test server
	// StaticAccessKeyID and StaticSecretAccessKey are the legacy static pair for
	// assume-role mode; both or neither.
	StaticAccessKeyID, StaticSecretAccessKey string
	HTTPClient                               *http.Client
	// Attempts and Backoff bound the retries of retryable STS errors
	// (default 3 attempts, 250 ms doubling).
	Attempts int
	Backoff  time.Duration
	Now      func() time.Time
}

// Credentials are temporary AWS credentials.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	Expiration                                 time.Time
}

// Broker obtains credentials from STS.
type Broker struct {
	cfg Config
	sts *sts.Client
}

var roleARN = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)

// ResolveRoleARN picks the role: BROKER_DATA_ROLE_ARN, else the legacy
// BROKER_AGENT_ROLE_ARN, else arn:aws:iam::ACCOUNT_ID:role/agentkeys-data-role.
func ResolveRoleARN(dataRole, agentRole, accountID string) (string, error) {
	arn := dataRole
	if arn == "" {
		arn = agentRole
	}
	if arn == "" && accountID != "" {
		if !regexp.MustCompile(`^\d{12}$`).MatchString(accountID) {
			return "", fmt.Errorf("ACCOUNT_ID %q is not a 12-digit AWS account id", accountID)
		}
		arn = "arn:aws:iam::" + accountID + ":role/agentkeys-data-role"
	}
	if arn == "" {
		return "", errors.New("no role: set BROKER_DATA_ROLE_ARN (or BROKER_AGENT_ROLE_ARN, or ACCOUNT_ID)")
	}
	if !roleARN.MatchString(arn) {
		return "", fmt.Errorf("role %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", arn)
	}
	return arn, nil
}

// ResolveRegion picks BROKER_AWS_REGION, else REGION, else us-east-1.
func ResolveRegion(brokerRegion, region string) string {
	if brokerRegion != "" {
		return brokerRegion
	}
	if region != "" {
		return region
	}
	return "us-east-1"
}

// New returns a Broker. In assume-role mode it loads the SDK's default
// credential chain unless the static pair is given.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeWebIdentity
	}
	if cfg.Mode != ModeWebIdentity && cfg.Mode != ModeAssumeRole {
		return nil, fmt.Errorf("STS mode %q: want web-identity or assume-role", cfg.Mode)
	}
	if !roleARN.MatchString(cfg.RoleARN) {
		return nil, fmt.Errorf("role %q is not an IAM role ARN", cfg.RoleARN)
	}
	if (cfg.StaticAccessKeyID == "") != (cfg.StaticSecretAccessKey == "") {
		return nil, errors.New("set both DAEMON_ACCESS_KEY_ID and DAEMON_SECRET_ACCESS_KEY, or neither")
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 250 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(cfg.Region), config.WithRetryMaxAttempts(1)}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	}
	switch {
	case cfg.Mode == ModeWebIdentity:
		// AssumeRoleWithWebIdentity is unsigned: no AWS secret on the host.
		opts = append(opts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	case cfg.StaticAccessKeyID != "":
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.StaticAccessKeyID, cfg.StaticSecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to load AWS configuration: %w", err)
	}
	client := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return &Broker{cfg: cfg, sts: client}, nil
}

// Mode reports the broker's mode.
func (b *Broker) Mode() Mode { return b.cfg.Mode }

// RoleSessionName is "agentkeys-<wallet>-<unix seconds>", cut to STS's 64
// characters by shortening the wallet, never the timestamp.
func RoleSessionName(wallet string, now time.Time) string {
	suffix := fmt.Sprintf("-%d", now.Unix())
	prefix := "agentkeys-" + wallet
	if len(prefix)+len(suffix) > 64 {
		prefix = prefix[:64-len(suffix)]
	}
	return prefix + suffix
}

// WithWebIdentity exchanges a JWT for credentials (web-identity mode).
func (b *Broker) WithWebIdentity(ctx context.Context, wallet, jwt string, duration time.Duration) (Credentials, error) {
	in := &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(b.cfg.RoleARN),
		RoleSessionName:  aws.String(RoleSessionName(wallet, b.cfg.Now())),
		WebIdentityToken: aws.String(jwt),
		DurationSeconds:  aws.Int32(int32(duration / time.Second)),
	}
	return b.retry(ctx, "AssumeRoleWithWebIdentity", func() (*ststypes.Credentials, error) {
		out, err := b.sts.AssumeRoleWithWebIdentity(ctx, in)
		if err != nil {
			return nil, err
		}
		return out.Credentials, nil
	})
}

// AssumeRole obtains credentials with the host's own AWS identity (assume-role
// mode), tagging the session with the wallet.
func (b *Broker) AssumeRole(ctx context.Context, wallet string, duration time.Duration) (Credentials, error) {
	in := &sts.AssumeRoleInput{
		RoleArn:           aws.String(b.cfg.RoleARN),
		RoleSessionName:   aws.String(RoleSessionName(wallet, b.cfg.Now())),
		DurationSeconds:   aws.Int32(int32(duration / time.Second)),
		SourceIdentity:    aws.String(wallet),
		Tags:              []ststypes.Tag{{Key: aws.String(TagKey), Value: aws.String(wallet)}},
		TransitiveTagKeys: []string{TagKey},
	}
	return b.retry(ctx, "AssumeRole", func() (*ststypes.Credentials, error) {
		out, err := b.sts.AssumeRole(ctx, in)
		if err != nil {
			return nil, err
		}
		return out.Credentials, nil
	})
}

// CheckIdentity calls GetCallerIdentity: the start-up check of assume-role mode.
func (b *Broker) CheckIdentity(ctx context.Context) (string, error) {
	out, err := b.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", b.wrap("GetCallerIdentity", err)
	}
	return aws.ToString(out.Arn), nil
}

func (b *Broker) retry(ctx context.Context, action string, call func() (*ststypes.Credentials, error)) (Credentials, error) {
	delay := b.cfg.Backoff
	for attempt := 1; ; attempt++ {
		c, err := call()
		if err == nil {
			if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil || c.Expiration == nil {
				return Credentials{}, &STSError{Action: action, Code: "MalformedResponse", Message: "STS answered without complete credentials"}
			}
			return Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken, Expiration: *c.Expiration}, nil
		}
		serr := b.wrap(action, err)
		if !serr.Retryable || attempt >= b.cfg.Attempts {
			serr.Attempts = attempt
			return Credentials{}, serr
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return Credentials{}, serr
		}
		delay *= 2
	}
}

// STSError is an STS failure with its code and, where known, an operator hint.
// Code, Message and Hint may be shown to the client; Err may not.
type STSError struct {
	Action    string
	Code      string // the STS error code, or "RequestFailed" when STS was not reached
	Message   string
	Hint      string
	Retryable bool
	Attempts  int
	// Err is the underlying error, for the host's log: a transport error names
	// the endpoint's URL and address, which stay on the host.
	Err error
}

// Unwrap returns Err.
func (e *STSError) Unwrap() error { return e.Err }

// Error is for the operator (the host's log, its start-up errors): when STS
// was not reached it includes the cause, which names the endpoint. A client
// gets Code, Message and Hint only.
func (e *STSError) Error() string {
	s := fmt.Sprintf("STS %s failed: %s: %s", e.Action, e.Code, e.Message)
	if e.Err != nil && (e.Code == "RequestFailed" || e.Code == "NoCredentials") {
		s += ": " + shorten(e.Err.Error())
	}
	if e.Hint != "" {
		s += " (hint: " + e.Hint + ")"
	}
	return s
}

func (b *Broker) wrap(action string, err error) *STSError {
	var api smithy.APIError
	if strings.Contains(err.Error(), "failed to retrieve credentials") || strings.Contains(err.Error(), "failed to refresh cached credentials") {
		return &STSError{Action: action, Code: "NoCredentials", Message: "the host has no AWS credentials for " + action, Err: err,
			Hint: "assume-role mode needs the SDK default credential chain (instance role, AWS_* variables, shared config) or DAEMON_ACCESS_KEY_ID/DAEMON_SECRET_ACCESS_KEY"}
	}
	if !errors.As(err, &api) {
		return &STSError{Action: action, Code: "RequestFailed", Message: "could not reach STS", Err: err,
			Hint: "check BROKER_STS_ENDPOINT / BROKER_AWS_REGION and the host's network path to STS"}
	}
	e := &STSError{Action: action, Code: api.ErrorCode(), Message: shorten(api.ErrorMessage()), Err: err}
	lower := strings.ToLower(e.Message)
	switch {
	case e.Code == "IDPCommunicationError":
		e.Retryable = true
		e.Hint = "STS could not reach the issuer; its discovery document and JWKS must be publicly reachable over TLS"
	case e.Code == "InvalidIdentityToken" && strings.Contains(lower, "retrieve verification key"):
		e.Retryable = true
		e.Hint = "the issuer's discovery document and JWKS must be publicly reachable over TLS with a publicly trusted certificate"
	case e.Code == "InvalidIdentityToken" && strings.Contains(lower, "no openidconnect provider"):
		e.Hint = "register the issuer as an IAM OIDC provider with exactly the issuer URL (no trailing slash) and audience sts.amazonaws.com"
	case e.Code == "AccessDenied" && action == "AssumeRoleWithWebIdentity":
		e.Hint = "the role's trust policy must allow sts:AssumeRoleWithWebIdentity and sts:TagSession for this OIDC provider with aud = sts.amazonaws.com (see docs/aws.md)"
	case e.Code == "AccessDenied":
		e.Hint = "the host's AWS identity needs sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity on the role, and the role's trust policy must allow them"
	case e.Code == "ExpiredTokenException":
		e.Hint = "the JWT expired before STS saw it; check the host's and enclave's clocks"
	case e.Code == "RegionDisabledException":
		e.Hint = "activate STS in this region (IAM account settings) or set BROKER_AWS_REGION"
	}
	return e
}

func shorten(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
