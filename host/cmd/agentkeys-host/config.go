package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentkeys/broker/host/awscreds"
	"github.com/agentkeys/broker/host/pgdb"
	"github.com/agentkeys/broker/host/ratelimit"
	"github.com/agentkeys/broker/host/sealedseed"
	"github.com/agentkeys/broker/host/witness"
	"github.com/agentkeys/broker/shared/auditlog"
	"github.com/agentkeys/broker/shared/cliflag"
	"github.com/agentkeys/broker/shared/policy"
)

// config is every option of the host. Each flag has an environment variable;
// the Rust broker's names are kept where they exist. A flag given on the
// command line wins over its variable.
type config struct {
	Issuer         string
	Port           int
	Enclave        string
	StateDir       string
	AuditDB        string
	AuditDSN       string // PostgreSQL URL of the shared audit store and revocation list; "" = SQLite
	AuditLogName   string // the log this host keeps for its enclave; "" = the default log
	JWTTTL         int64
	ShutdownGrace  time.Duration
	TLSDomain      string
	ACMECA         string
	ACMEEmail      string
	ACMECARoot     string
	HTTPSPort      int
	HTTPPort       int
	BehindProxy    bool
	SessionBackend string
	LogLevel       string
	ListenAddr     string // derived: where the plain-HTTP API listens

	// AWS credentials (/v1/mint-aws-creds).
	STSMode          string
	RoleARN          string // resolved from BROKER_DATA_ROLE_ARN, BROKER_AGENT_ROLE_ARN or ACCOUNT_ID; "" = off
	AWSRegion        string
	STSEndpoint      string
	SessionDuration  time.Duration
	SkipStartupCheck bool
	SignInRate       float64 // sign-in requests per second per client; 0 = off
	PageRate         float64 // transparency page loads per second per client; 0 = off
	ReadRate         float64 // /readyz and /v1/audit/ reads per second per client; 0 = off

	// Abuse limits (see docs/operator.md).
	TrustedProxies  []netip.Prefix // proxies whose X-Forwarded-For is believed; none = never
	MintRate        float64        // bearer-route requests per second per client; 0 = off
	MintBurst       int
	WalletMintRate  float64 // mints per second per wallet; 0 = off
	RefusalRate     float64 // refusals before authentication per second per client; 0 = no budget
	RefusalBurst    int
	RefusalInterval time.Duration // how often aggregated refusals are written
	RefusalClients  int           // clients with aggregates of their own per interval
	MetricsListen   string        // "" = no metrics listener of its own
	MetricsPublic   bool          // keep /metrics on a public (TLS or proxied) API listener
	MetricsOnAPI    bool          // derived: /metrics is served on the API listener
	SealedSeed      string        // the enclave's KMS-sealed seed (nitro mode); default STATE_DIR/sealed-seed
	DaemonKeyID     string        // legacy static pair, environment only: never a flag
	DaemonSecret    string

	// The issuer origin (docs/trust.md).
	IssuerOrigin      string // enclave or host
	APIURL            string // the API's URL; default the issuer
	IssuerOriginPort  int    // 0: share the HTTPS port, routed by SNI
	EnclaveOrigin     string // the enclave's origin listener
	RelayAddr         string // derived: where the relay listens with a port of its own
	RelayMaxConns     int
	RelayHelloTimeout time.Duration
	RelayIdleTimeout  time.Duration
	// Witnesses cosign the audit log's checkpoints (--witness URL=VKEY).
	Witnesses       []witness.Witness
	WitnessInterval time.Duration
}

// parseConfig parses the flags and the environment. On -h or --help it writes
// the help to stdout and returns flag.ErrHelp.
func parseConfig(args []string, getenv func(string) string, stdout io.Writer) (*config, error) {
	c := &config{}
	var port, ttl, grace, httpsPort, httpPort, sessDur, signInRate, pageRate, readRate string
	var trustedProxies, mintRate, mintBurst, walletMintRate, refusalRate, refusalBurst, refusalInterval, refusalClients string
	var originPort, relayMaxConns, relayHelloTimeout, relayIdleTimeout, witnessInterval string
	fs := flag.NewFlagSet("agentkeys-host", flag.ContinueOnError)
	flags := []struct {
		name, env, def, usage string
		p                     *string
	}{
		{"issuer", "BROKER_OIDC_ISSUER", "", "OIDC issuer URL; must equal the enclave policy's issuer (default http://127.0.0.1:PORT)", &c.Issuer},
		{"port", "BROKER_PORT", "8091", "port of the HTTP API when not serving TLS itself", &port},
		{"enclave", "BROKER_ENCLAVE", "vsock:16:5005", "enclave address: vsock:CID:PORT, unix:PATH or tcp:127.0.0.1:PORT", &c.Enclave},
		{"state-dir", "BROKER_STATE_DIR", "/var/lib/agentkeys-host", "directory for the audit log, revocations and ACME certificates", &c.StateDir},
		{"audit-db", "BROKER_AUDIT_DB_PATH", "", "SQLite audit log path (default STATE_DIR/audit.db)", &c.AuditDB},
		{"audit-log-name", "BROKER_AUDIT_LOG_NAME", "", "name of the audit log this host keeps for its enclave, origin ISSUER_HOST_PATH/audit/NAME: lowercase letters, digits and '-', at most 63; one name per host+enclave pair sharing a database (default: the default log, origin ISSUER_HOST_PATH/audit)", &c.AuditLogName},
		{"sealed-seed", "BROKER_SEALED_SEED", "", "file keeping the enclave's KMS-sealed seed, written 0600 on first start (default STATE_DIR/sealed-seed); back it up: losing it means new keys", &c.SealedSeed},
		{"jwt-ttl", "BROKER_OIDC_JWT_TTL_SECONDS", "0", "JWT TTL in seconds when a caller gives none (0: the enclave policy's default)", &ttl},
		{"shutdown-grace", "BROKER_SHUTDOWN_GRACE_SECONDS", "10", "seconds to drain in-flight requests on shutdown", &grace},
		{"tls-domain", "BROKER_TLS_DOMAIN", "", "serve HTTPS for this DNS name with an ACME certificate (ports 443 and 80)", &c.TLSDomain},
		{"acme-ca", "BROKER_ACME_CA", "", "ACME directory URL (default Let's Encrypt production)", &c.ACMECA},
		{"acme-email", "BROKER_ACME_EMAIL", "", "ACME account email", &c.ACMEEmail},
		{"acme-ca-root", "BROKER_ACME_CA_ROOT", "", "PEM file of roots to trust for the ACME server's own TLS (private CAs, tests)", &c.ACMECARoot},
		{"https-port", "BROKER_HTTPS_PORT", "443", "HTTPS port with --tls-domain", &httpsPort},
		{"http-port", "BROKER_HTTP_PORT", "80", "HTTP port (ACME challenges and redirects) with --tls-domain", &httpPort},
		{"session-backend", "BROKER_SESSION_BACKEND", "", "compatibility: validate opaque bearers with this AgentKeys backend (needs allow_host_asserted_wallet in the enclave policy)", &c.SessionBackend},
		{"log-level", "BROKER_LOG_LEVEL", "info", "log level: debug, info, warn or error", &c.LogLevel},
		{"sts-mode", "BROKER_STS_MODE", "web-identity", "how /v1/mint-aws-creds gets credentials: web-identity (no AWS secret on the host) or assume-role", &c.STSMode},
		{"role-arn", "BROKER_DATA_ROLE_ARN", "", "IAM role for agents (else $BROKER_AGENT_ROLE_ARN, else arn:aws:iam::$ACCOUNT_ID:role/agentkeys-data-role); unset: AWS minting off", &c.RoleARN},
		{"aws-region", "BROKER_AWS_REGION", "", "AWS region for STS (else $REGION, else us-east-1)", &c.AWSRegion},
		{"sts-endpoint", "BROKER_STS_ENDPOINT", "", "STS endpoint URL override (VPC or FIPS endpoints, tests)", &c.STSEndpoint},
		{"session-duration", "BROKER_SESSION_DURATION_SECONDS", "3600", "default AWS credential lifetime in seconds, within the enclave policy's aws_duration bounds (900-43200 by default)", &sessDur},
		{"metrics-listen", "BROKER_METRICS_LISTEN", "", "serve /metrics only on this address (e.g. 127.0.0.1:9091) instead of the public API listener", &c.MetricsListen},
		{"sign-in-rate", "BROKER_SIGN_IN_RATE", "5", "sign-in requests (nonce and sign-in) per second per client, bursts of 4x; 0 turns the limit off", &signInRate},
		{"read-rate", "BROKER_READ_RATE", "200", "reads of /readyz (which writes a heartbeat) and of the audit log under /v1/audit/ per second per client, bursts of 5x; over it 429; 0 turns the limit off", &readRate},
		{"page-rate", "BROKER_PAGE_RATE", "2", "transparency page (GET /) loads per second per client, bursts of 4x; over it 429; 0 turns the limit off", &pageRate},
		{"trusted-proxies", "BROKER_TRUSTED_PROXIES", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client (the right-most untrusted hop); empty: X-Forwarded-For is ignored", &trustedProxies},
		{"mint-rate", "BROKER_MINT_RATE", "10000", "requests per second per client on the bearer routes (mint-oidc-jwt, mint-aws-creds, session/revoke); over it 429; 0 turns the limit off", &mintRate},
		{"mint-burst", "BROKER_MINT_BURST", "20000", "burst of --mint-rate", &mintBurst},
		{"mint-rate-per-wallet", "BROKER_MINT_RATE_PER_WALLET", "10000", "credentials minted per second per wallet (after the enclave verified the session), bursts of 2x; over it 429; 0 turns the limit off", &walletMintRate},
		{"refusal-rate", "BROKER_REFUSAL_RATE", "10", "unauthenticated refusals (no, a malformed or an unverifiable bearer) per second per client answered with their error and, if they carry a bearer, recorded one by one; past it 429 and only counted; 0: no budget, never 429", &refusalRate},
		{"refusal-burst", "BROKER_REFUSAL_BURST", "50", "burst of --refusal-rate", &refusalBurst},
		{"refusal-interval", "BROKER_REFUSAL_INTERVAL", "1m", "how often refusals before authentication are written to the audit log, as one record per client, route and outcome with a count (1s to 1h)", &refusalInterval},
		{"issuer-origin", "BROKER_ISSUER_ORIGIN", "", "who terminates TLS for the issuer URL: enclave (the host relays the issuer origin's connections to the enclave unopened) or host (the host serves discovery and JWKS: it could add a key); default enclave with a vsock --enclave and an https issuer, else host", &c.IssuerOrigin},
		{"api-url", "BROKER_API_URL", "", "URL of the API origin (sign-in, minting, audit, attestation), as the enclave policy's api_url (default: the issuer)", &c.APIURL},
		{"issuer-origin-port", "BROKER_ISSUER_ORIGIN_PORT", "0", "with --issuer-origin enclave: relay the issuer origin on this port of its own; 0 shares the HTTPS port, routed by SNI (needs --tls-domain for the API)", &originPort},
		{"enclave-origin", "BROKER_ENCLAVE_ORIGIN", "", "with --issuer-origin enclave: the enclave's --origin-listen address (default vsock:CID:5006 with a vsock --enclave)", &c.EnclaveOrigin},
		{"relay-max-conns", "BROKER_RELAY_MAX_CONNS", "256", "connections the TLS relay holds at once (issuer origin and, when sharing the port, the API); more are closed at once", &relayMaxConns},
		{"relay-hello-timeout", "BROKER_RELAY_HELLO_TIMEOUT", "10s", "time a client has to send its whole TLS ClientHello to the relay", &relayHelloTimeout},
		{"relay-idle-timeout", "BROKER_RELAY_IDLE_TIMEOUT", "2m", "close a relayed issuer origin connection idle this long", &relayIdleTimeout},
		{"witness-interval", "BROKER_WITNESS_INTERVAL", witness.DefaultInterval.String(), "how often checkpoints are submitted to the witnesses and those behind retried (1s to 1h); each mint also submits at once", &witnessInterval},
		{"refusal-clients", "BROKER_REFUSAL_CLIENTS", "1000", "clients with aggregate records of their own per --refusal-interval; further clients are counted together as \"other\"", &refusalClients},
	}
	envOf := map[string]string{}
	for _, f := range flags {
		envOf[f.name] = f.env
		def := f.def
		if v := getenv(f.env); v != "" {
			def = v
		}
		fs.StringVar(f.p, f.name, def, f.usage+" ["+f.env+"]")
	}
	// --audit-dsn carries a password: its variable is not the flag's default,
	// which -h would print.
	envOf["audit-dsn"] = "BROKER_AUDIT_DSN"
	fs.StringVar(&c.AuditDSN, "audit-dsn", "", "PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB) of the audit store and revocation list that several hosts share; empty: SQLite files in the state dir (see docs/operator.md, PostgreSQL) [BROKER_AUDIT_DSN]")
	// The one boolean flag: --behind-proxy needs no value on the command line.
	envOf["behind-proxy"] = "BROKER_BEHIND_PROXY"
	if v := getenv("BROKER_BEHIND_PROXY"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("invalid BROKER_BEHIND_PROXY %q: want true or false", v)
		}
		c.BehindProxy = b
	}
	fs.BoolVar(&c.BehindProxy, "behind-proxy", c.BehindProxy, "TLS is terminated by a reverse proxy: listen on all interfaces [BROKER_BEHIND_PROXY]")
	if v := getenv("BROKER_SKIP_STARTUP_CHECK"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("invalid BROKER_SKIP_STARTUP_CHECK %q: want true or false", v)
		}
		c.SkipStartupCheck = b
	}
	envOf["skip-startup-check"] = "BROKER_SKIP_STARTUP_CHECK"
	fs.BoolVar(&c.SkipStartupCheck, "skip-startup-check", c.SkipStartupCheck, "assume-role mode: skip the GetCallerIdentity check at start [BROKER_SKIP_STARTUP_CHECK]")
	if v := getenv("BROKER_METRICS_PUBLIC"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("invalid BROKER_METRICS_PUBLIC %q: want true or false", v)
		}
		c.MetricsPublic = b
	}
	envOf["metrics-public"] = "BROKER_METRICS_PUBLIC"
	fs.BoolVar(&c.MetricsPublic, "metrics-public", c.MetricsPublic, "serve /metrics on the API listener even with --tls-domain or --behind-proxy, where it is off by default [BROKER_METRICS_PUBLIC]")
	// --witness is repeatable; given on the command line, it replaces
	// BROKER_WITNESSES (comma-separated).
	envOf["witness"] = "BROKER_WITNESSES"
	var witnessFlags []string
	fs.Func("witness", "a witness to cosign the audit log's checkpoints, `URL=VKEY` (submission prefix and cosignature/v1 verifier key); repeatable; none: checkpoints are served with the enclave's signature alone [BROKER_WITNESSES, comma-separated]",
		func(v string) error { witnessFlags = append(witnessFlags, v); return nil })
	if err := cliflag.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: agentkeys-host [flags]\n\nThe AgentKeys host: OIDC issuer and credential broker in front of an agentkeys-enclave.\nEvery flag can also be set by the environment variable named in brackets.\n\nFlags:")
			cliflag.PrintDefaults(stdout, fs)
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	bad := func(name, val, want string) error {
		return fmt.Errorf("invalid --%s (%s) %q: %s", name, envOf[name], val, want)
	}
	var err error
	if c.Port, err = parsePort(port); err != nil {
		return nil, bad("port", port, "want a port number 1-65535")
	}
	if c.HTTPSPort, err = parsePort(httpsPort); err != nil {
		return nil, bad("https-port", httpsPort, "want a port number 1-65535")
	}
	if c.HTTPPort, err = parsePort(httpPort); err != nil {
		return nil, bad("http-port", httpPort, "want a port number 1-65535")
	}
	if c.JWTTTL, err = strconv.ParseInt(ttl, 10, 64); err != nil || (c.JWTTTL != 0 && (c.JWTTTL < policy.HardMinJWTTTL || c.JWTTTL > policy.HardMaxJWTTTL)) {
		return nil, bad("jwt-ttl", ttl, fmt.Sprintf("want 0 or seconds in [%d, %d]", policy.HardMinJWTTTL, policy.HardMaxJWTTTL))
	}
	g, err := strconv.ParseInt(grace, 10, 64)
	if err != nil || g < 0 || g > 3600 {
		return nil, bad("shutdown-grace", grace, "want seconds in [0, 3600]")
	}
	c.ShutdownGrace = time.Duration(g) * time.Second
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, bad("log-level", c.LogLevel, "want debug, info, warn or error")
	}
	if c.StateDir == "" {
		return nil, bad("state-dir", "", "want a directory")
	}
	if c.AuditDSN == "" {
		c.AuditDSN = getenv("BROKER_AUDIT_DSN")
	}
	if c.AuditDSN != "" {
		if !pgdb.IsDSN(c.AuditDSN) {
			return nil, bad("audit-dsn", pgdb.Redact(c.AuditDSN), "want a postgres:// or postgresql:// URL")
		}
		if c.AuditDB != "" {
			return nil, errors.New("--audit-dsn (BROKER_AUDIT_DSN) and --audit-db (BROKER_AUDIT_DB_PATH) exclude each other: the audit log is either in PostgreSQL or in a SQLite file")
		}
	}
	if err := auditlog.CheckLogName(c.AuditLogName); err != nil {
		return nil, bad("audit-log-name", c.AuditLogName, "want empty (the default log) or 1 to 63 lowercase letters, digits and '-', not starting with '-', such as host-a")
	}
	if c.AuditDB == "" {
		c.AuditDB = filepath.Join(c.StateDir, "audit.db")
	}
	if c.SealedSeed == "" {
		c.SealedSeed = filepath.Join(c.StateDir, sealedseed.FileName)
	}
	if c.Issuer == "" {
		c.Issuer = fmt.Sprintf("http://127.0.0.1:%d", c.Port)
		if c.TLSDomain != "" {
			c.Issuer = "https://" + strings.ToLower(c.TLSDomain)
		}
	}
	iss, err := policy.NormalizeIssuer(c.Issuer)
	if err != nil {
		return nil, bad("issuer", c.Issuer, err.Error())
	}
	c.Issuer = iss
	if c.IssuerOrigin == "" {
		// A Nitro Enclave (vsock) serves an https issuer itself; a loopback
		// http issuer (development) can only be the host's.
		c.IssuerOrigin = "host"
		if strings.HasPrefix(c.Enclave, "vsock:") && strings.HasPrefix(c.Issuer, "https:") {
			c.IssuerOrigin = "enclave"
		}
	}
	if c.APIURL == "" {
		c.APIURL = iss
		if c.IssuerOrigin == "enclave" && originPort != "0" {
			// The issuer origin has a port of its own: the API is where
			// this host serves it.
			c.APIURL = fmt.Sprintf("http://127.0.0.1:%d", c.Port)
			if c.TLSDomain != "" {
				c.APIURL = "https://" + strings.ToLower(c.TLSDomain)
			}
		}
	}
	if c.APIURL, err = policy.NormalizeIssuer(c.APIURL); err != nil {
		return nil, bad("api-url", c.APIURL, err.Error())
	}
	// The API's listeners follow the API URL (by default the issuer).
	u, _ := url.Parse(c.APIURL)
	urlFlag := "issuer"
	if c.APIURL != iss {
		urlFlag = "api-url"
	}
	switch {
	case c.TLSDomain != "":
		if c.BehindProxy {
			return nil, errors.New("--tls-domain and --behind-proxy exclude each other: either this host terminates TLS or a proxy does")
		}
		if u.Scheme != "https" || u.Hostname() != strings.ToLower(c.TLSDomain) {
			return nil, bad(urlFlag, c.APIURL, fmt.Sprintf("with --tls-domain %s the %s must be https://%s", c.TLSDomain, urlFlag, c.TLSDomain))
		}
	case c.BehindProxy:
		c.ListenAddr = fmt.Sprintf(":%d", c.Port)
	default:
		if u.Scheme == "https" {
			return nil, bad(urlFlag, c.APIURL, "an https "+urlFlag+" needs --tls-domain (this host serves TLS) or --behind-proxy (a proxy does)")
		}
		// Plain HTTP without a proxy: loopback only.
		c.ListenAddr = fmt.Sprintf("127.0.0.1:%d", c.Port)
	}
	if err := c.issuerOrigin(originPort, relayMaxConns, relayHelloTimeout, relayIdleTimeout, bad); err != nil {
		return nil, err
	}
	switch c.STSMode {
	case "web-identity", "assume-role":
	default:
		return nil, bad("sts-mode", c.STSMode, "want web-identity or assume-role")
	}
	d, err := strconv.ParseInt(sessDur, 10, 64)
	// STS's own bounds; the enclave policy's, which may be narrower, are
	// checked when its Info arrives (api.New) and on every request.
	if err != nil || d < policy.HardMinAWSDuration || d > policy.HardMaxAWSDuration {
		return nil, bad("session-duration", sessDur, fmt.Sprintf("want seconds in [%d, %d], within the enclave policy's aws_duration bounds", policy.HardMinAWSDuration, policy.HardMaxAWSDuration))
	}
	c.SessionDuration = time.Duration(d) * time.Second
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return nil, bad("metrics-listen", c.MetricsListen, "want HOST:PORT")
		}
	}
	// /metrics stays on the API listener only where that listener is loopback
	// (the Rust broker's layout); a public listener does not show the world the
	// host's request and error counts unless asked to.
	switch {
	case c.MetricsListen != "" && c.MetricsPublic:
		return nil, errors.New("--metrics-listen and --metrics-public exclude each other: /metrics is served either on its own listener or on the API's")
	case c.MetricsListen != "":
		c.MetricsOnAPI = false
	default:
		c.MetricsOnAPI = c.MetricsPublic || (c.TLSDomain == "" && !c.BehindProxy)
	}
	if c.SignInRate, err = strconv.ParseFloat(signInRate, 64); err != nil || c.SignInRate < 0 || c.SignInRate > 10000 {
		return nil, bad("sign-in-rate", signInRate, "want requests per second in [0, 10000]")
	}
	if c.PageRate, err = strconv.ParseFloat(pageRate, 64); err != nil || c.PageRate < 0 || c.PageRate > 10000 {
		return nil, bad("page-rate", pageRate, "want page loads per second in [0, 10000]")
	}
	if c.ReadRate, err = strconv.ParseFloat(readRate, 64); err != nil || c.ReadRate < 0 || c.ReadRate > 100000 {
		return nil, bad("read-rate", readRate, "want reads per second in [0, 100000]")
	}
	if c.TrustedProxies, err = ratelimit.ParseTrustedProxies(trustedProxies); err != nil {
		return nil, bad("trusted-proxies", trustedProxies, err.Error())
	}
	if c.MintRate, err = strconv.ParseFloat(mintRate, 64); err != nil || !(c.MintRate >= 0 && c.MintRate <= 1e6) {
		return nil, bad("mint-rate", mintRate, "want requests per second in [0, 1000000]")
	}
	if c.MintBurst, err = strconv.Atoi(mintBurst); err != nil || c.MintBurst < 1 || c.MintBurst > 10_000_000 {
		return nil, bad("mint-burst", mintBurst, "want requests in [1, 10000000]")
	}
	if c.WalletMintRate, err = strconv.ParseFloat(walletMintRate, 64); err != nil || !(c.WalletMintRate >= 0 && c.WalletMintRate <= 1e6) {
		return nil, bad("mint-rate-per-wallet", walletMintRate, "want mints per second in [0, 1000000]")
	}
	if c.RefusalRate, err = strconv.ParseFloat(refusalRate, 64); err != nil || !(c.RefusalRate >= 0 && c.RefusalRate <= 1e4) {
		return nil, bad("refusal-rate", refusalRate, "want refusals per second in [0, 10000]")
	}
	if c.RefusalBurst, err = strconv.Atoi(refusalBurst); err != nil || c.RefusalBurst < 1 || c.RefusalBurst > 1_000_000 {
		return nil, bad("refusal-burst", refusalBurst, "want refusals in [1, 1000000]")
	}
	if c.RefusalInterval, err = time.ParseDuration(refusalInterval); err != nil || c.RefusalInterval < time.Second || c.RefusalInterval > time.Hour {
		return nil, bad("refusal-interval", refusalInterval, "want a duration from 1s to 1h, such as 1m")
	}
	if c.RefusalClients, err = strconv.Atoi(refusalClients); err != nil || c.RefusalClients < 1 || c.RefusalClients > 1_000_000 {
		return nil, bad("refusal-clients", refusalClients, "want clients in [1, 1000000]")
	}
	if c.WitnessInterval, err = time.ParseDuration(witnessInterval); err != nil || c.WitnessInterval < time.Second || c.WitnessInterval > time.Hour {
		return nil, bad("witness-interval", witnessInterval, "want a duration from 1s to 1h, such as 5s")
	}
	if witnessFlags == nil && getenv("BROKER_WITNESSES") != "" {
		witnessFlags = strings.Split(getenv("BROKER_WITNESSES"), ",")
	}
	for _, v := range witnessFlags {
		w, err := witness.ParseWitness(v)
		if err != nil {
			return nil, bad("witness", v, err.Error())
		}
		c.Witnesses = append(c.Witnesses, w)
	}
	if c.RoleARN != "" || getenv("BROKER_AGENT_ROLE_ARN") != "" || getenv("ACCOUNT_ID") != "" {
		arn, err := awscreds.ResolveRoleARN(c.RoleARN, getenv("BROKER_AGENT_ROLE_ARN"), getenv("ACCOUNT_ID"))
		if err != nil {
			return nil, fmt.Errorf("invalid AWS role (--role-arn, BROKER_DATA_ROLE_ARN, BROKER_AGENT_ROLE_ARN or ACCOUNT_ID): %w", err)
		}
		c.RoleARN = arn
	}
	c.AWSRegion = awscreds.ResolveRegion(c.AWSRegion, getenv("REGION"))
	c.DaemonKeyID, c.DaemonSecret = getenv("DAEMON_ACCESS_KEY_ID"), getenv("DAEMON_SECRET_ACCESS_KEY")
	if (c.DaemonKeyID == "") != (c.DaemonSecret == "") {
		return nil, errors.New("set both DAEMON_ACCESS_KEY_ID and DAEMON_SECRET_ACCESS_KEY, or neither")
	}
	if c.STSEndpoint != "" {
		if u, err := url.Parse(c.STSEndpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, bad("sts-endpoint", c.STSEndpoint, "want an http(s) URL")
		}
	}
	if c.ACMECARoot != "" {
		if _, err := os.Stat(c.ACMECARoot); err != nil {
			return nil, bad("acme-ca-root", c.ACMECARoot, err.Error())
		}
	}
	return c, nil
}

// issuerOrigin checks the issuer origin's flags: with --issuer-origin enclave
// the relay needs an https issuer on the port it listens on, and, sharing the
// HTTPS port, an API origin of another host name served by --tls-domain.
func (c *config) issuerOrigin(port, maxConns, helloTimeout, idleTimeout string, bad func(name, val, want string) error) error {
	var err error
	if c.RelayMaxConns, err = strconv.Atoi(maxConns); err != nil || c.RelayMaxConns < 1 || c.RelayMaxConns > 1_000_000 {
		return bad("relay-max-conns", maxConns, "want connections in [1, 1000000]")
	}
	if c.RelayHelloTimeout, err = time.ParseDuration(helloTimeout); err != nil || c.RelayHelloTimeout < 100*time.Millisecond || c.RelayHelloTimeout > 5*time.Minute {
		return bad("relay-hello-timeout", helloTimeout, "want a duration from 100ms to 5m, such as 10s")
	}
	if c.RelayIdleTimeout, err = time.ParseDuration(idleTimeout); err != nil || c.RelayIdleTimeout < time.Second || c.RelayIdleTimeout > time.Hour {
		return bad("relay-idle-timeout", idleTimeout, "want a duration from 1s to 1h, such as 2m")
	}
	if port != "0" {
		if c.IssuerOriginPort, err = parsePort(port); err != nil {
			return bad("issuer-origin-port", port, "want 0 (share the HTTPS port) or a port number 1-65535")
		}
	}
	switch c.IssuerOrigin {
	case "host":
		return nil
	case "enclave":
	default:
		return bad("issuer-origin", c.IssuerOrigin, "want enclave or host")
	}
	iu, _ := url.Parse(c.Issuer)
	if iu.Scheme != "https" {
		return bad("issuer", c.Issuer, "with --issuer-origin enclave the enclave serves the issuer over TLS: it must be https (https://localhost:8443 on a laptop)")
	}
	issuerPort := iu.Port()
	if issuerPort == "" {
		issuerPort = "443"
	}
	if c.EnclaveOrigin == "" {
		cid, _, ok := strings.Cut(strings.TrimPrefix(c.Enclave, "vsock:"), ":")
		if !strings.HasPrefix(c.Enclave, "vsock:") || !ok {
			return bad("enclave-origin", "", "with --issuer-origin enclave and a non-vsock --enclave, give the enclave's --origin-listen address (unix:PATH or tcp:127.0.0.1:PORT)")
		}
		c.EnclaveOrigin = "vsock:" + cid + ":5006"
	}
	au, _ := url.Parse(c.APIURL)
	if c.IssuerOriginPort == 0 {
		if c.TLSDomain == "" {
			return bad("issuer-origin-port", "0", "sharing the HTTPS port by SNI needs --tls-domain (the API's TLS on this host); or give the issuer origin a port of its own")
		}
		if strings.EqualFold(au.Hostname(), iu.Hostname()) {
			return bad("api-url", c.APIURL, fmt.Sprintf("sharing the HTTPS port, the API origin needs a host name of its own, not the issuer's %s (e.g. https://api.%s), or give the issuer origin a port of its own", iu.Hostname(), iu.Hostname()))
		}
		if issuerPort != strconv.Itoa(c.HTTPSPort) {
			return bad("issuer", c.Issuer, fmt.Sprintf("the issuer's port %s must be the HTTPS port %d, where the relay listens", issuerPort, c.HTTPSPort))
		}
		return nil
	}
	if issuerPort != strconv.Itoa(c.IssuerOriginPort) {
		return bad("issuer", c.Issuer, fmt.Sprintf("the issuer's port %s must be --issuer-origin-port %d, where the relay listens", issuerPort, c.IssuerOriginPort))
	}
	if c.APIURL == c.Issuer {
		return bad("api-url", c.APIURL, "with --issuer-origin enclave the API needs an origin of its own (set --api-url and the enclave policy's api_url)")
	}
	if (c.TLSDomain != "" && c.IssuerOriginPort == c.HTTPSPort) || c.IssuerOriginPort == c.Port || (c.TLSDomain != "" && c.IssuerOriginPort == c.HTTPPort) {
		return bad("issuer-origin-port", port, "the issuer origin's port must differ from the API's ports (--port, --https-port, --http-port); or give 0 to share the HTTPS port by SNI")
	}
	host := "127.0.0.1"
	if c.TLSDomain != "" || c.BehindProxy {
		host = ""
	}
	c.RelayAddr = net.JoinHostPort(host, strconv.Itoa(c.IssuerOriginPort))
	return nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, errors.New("bad port")
	}
	return p, nil
}
