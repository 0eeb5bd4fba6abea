package attest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentkeys/broker/shared/httpapi"
	"github.com/agentkeys/broker/shared/jwk"
	"github.com/agentkeys/broker/shared/manifest"
)

// Alarm reasons, the values of the reason label of agentkeys_attest_watch_alarm.
const (
	AlarmUnlistedKey    = "unlisted_key"     // the JWKS holds a key no verified manifest lists
	AlarmIssuerChanged  = "issuer_changed"   // discovery names another issuer than --issuer or than before
	AlarmJWKSURIChanged = "jwks_uri_changed" // discovery's jwks_uri changed since the first round
	AlarmJWKSNoCache    = "jwks_no_cache"    // the JWKS is served with no-cache, no-store or max-age=0
	AlarmManifest       = "manifest"         // no manifest could be verified this round
	AlarmFetch          = "fetch"            // discovery or the JWKS could not be fetched
	// AlarmIssuerTLSKey: a verified manifest says the enclave terminates TLS
	// for the issuer origin, but the issuer URL was served with another key.
	AlarmIssuerTLSKey = "issuer_tls_key"
)

var alarmReasons = []string{AlarmUnlistedKey, AlarmIssuerChanged, AlarmJWKSURIChanged, AlarmJWKSNoCache, AlarmManifest, AlarmFetch, AlarmIssuerTLSKey}

// Alarm is one thing a relying party should not see.
type Alarm struct {
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

// WatchConfig configures a Watcher.
type WatchConfig struct {
	// Issuer is the issuer URL relying parties use.
	Issuer string
	// ManifestURL, if set, is a base URL whose /.well-known/attestation is
	// fetched for a fresh nonce every round and verified with Document; each
	// manifest that verifies adds its keys to the known keys.
	ManifestURL string
	// Manifests are manifests the auditor verified beforehand and trusts as
	// given.
	Manifests []manifest.Manifest
	// Document says how attestation documents from ManifestURL are verified.
	Document DocumentOptions
	// Live configures the HTTP requests.
	Live LiveOptions
	// Log receives one line per round and one per alarm (default: discard).
	Log *slog.Logger
}

// Watcher fetches discovery and the JWKS as a relying party would and raises
// alarms. Create it with NewWatcher; call Round once per interval.
type Watcher struct {
	cfg     WatchConfig
	log     *slog.Logger
	reg     *prometheus.Registry
	alarm   *prometheus.GaugeVec
	lastRun prometheus.Gauge

	mu      sync.Mutex
	known   map[string]jwk.Key // kid → key, from every verified manifest
	tlsKeys map[string]bool    // issuer origin TLS keys (SPKI SHA-256), from manifests with issuer_origin enclave
	issuer  string             // discovery's issuer in the first round
	jwksURI string             // discovery's jwks_uri in the first round
}

// NewWatcher checks the configuration and returns a Watcher.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	if cfg.Issuer == "" {
		return nil, fmt.Errorf("watch: the issuer URL is required")
	}
	if cfg.ManifestURL == "" && len(cfg.Manifests) == 0 {
		return nil, fmt.Errorf("watch: give a manifest URL or at least one verified manifest")
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	cfg.Live.defaults()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{cfg: cfg, log: cfg.Log, reg: prometheus.NewRegistry(), known: map[string]jwk.Key{}, tlsKeys: map[string]bool{}}
	w.alarm = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentkeys_attest_watch_alarm",
		Help: "1 if the last round raised an alarm for this reason, else 0.",
	}, []string{"reason"})
	w.lastRun = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentkeys_attest_watch_last_round_timestamp_seconds",
		Help: "When the last round finished, in Unix seconds.",
	})
	w.reg.MustRegister(w.alarm, w.lastRun)
	for _, r := range alarmReasons {
		w.alarm.WithLabelValues(r).Set(0)
	}
	for _, m := range cfg.Manifests {
		w.learn(m)
	}
	return w, nil
}

// MetricsHandler serves the watcher's Prometheus metrics.
func (w *Watcher) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{})
}

func (w *Watcher) learn(m manifest.Manifest) {
	for kid, k := range m.Kids() {
		w.known[kid] = k
	}
	if m.IssuerOrigin == manifest.OriginEnclave {
		w.tlsKeys[m.IssuerOriginTLSSPKISHA256] = true
	}
}

// Round runs one round and returns its alarms (none: all is well). Each alarm
// is logged at WARN with the key "reason"; the round at INFO.
func (w *Watcher) Round(ctx context.Context) []Alarm {
	w.mu.Lock()
	defer w.mu.Unlock()
	var alarms []Alarm
	raise := func(reason, format string, args ...any) {
		alarms = append(alarms, Alarm{Reason: reason, Detail: fmt.Sprintf(format, args...)})
	}
	if w.cfg.ManifestURL != "" {
		m, r := FetchManifest(ctx, w.cfg.ManifestURL, w.cfg.Document, w.cfg.Live)
		if m != nil {
			w.learn(*m)
		} else if f := r.FirstFailure(); f != nil {
			raise(AlarmManifest, "no manifest verified from %s: %s: %s", w.cfg.ManifestURL, f.Name, f.Detail)
		}
	}
	w.check(ctx, raise)

	got := map[string]bool{}
	for _, a := range alarms {
		got[a.Reason] = true
		w.log.Warn("alarm", "reason", a.Reason, "detail", a.Detail, "issuer", w.cfg.Issuer)
	}
	for _, r := range alarmReasons {
		v := 0.0
		if got[r] {
			v = 1
		}
		w.alarm.WithLabelValues(r).Set(v)
	}
	w.lastRun.SetToCurrentTime()
	w.log.Info("round", "issuer", w.cfg.Issuer, "alarms", len(alarms), "known_kids", len(w.known))
	return alarms
}

// check fetches discovery and the JWKS and compares them with what is known.
func (w *Watcher) check(ctx context.Context, raise func(reason, format string, args ...any)) {
	var disc Discovery
	b, _, leaf, err := fetch(ctx, w.cfg.Live, w.cfg.Issuer+httpapi.PathDiscovery)
	if err == nil {
		err = json.Unmarshal(b, &disc)
	}
	if err != nil {
		raise(AlarmFetch, "discovery: %v", err)
		return
	}
	if len(w.tlsKeys) > 0 {
		w.checkTLSKey(leaf, raise)
	}
	if w.issuer == "" {
		w.issuer, w.jwksURI = disc.Issuer, disc.JWKSURI
	}
	switch {
	case disc.Issuer != w.cfg.Issuer:
		raise(AlarmIssuerChanged, "discovery names issuer %q, not %q: relying parties would reject or misattribute its tokens", disc.Issuer, w.cfg.Issuer)
	case disc.Issuer != w.issuer:
		raise(AlarmIssuerChanged, "discovery's issuer changed from %q to %q", w.issuer, disc.Issuer)
	}
	if disc.JWKSURI != w.jwksURI {
		raise(AlarmJWKSURIChanged, "discovery's jwks_uri changed from %q to %q: relying parties now fetch keys elsewhere", w.jwksURI, disc.JWKSURI)
	}
	b, hdr, err := get(ctx, w.cfg.Live, disc.JWKSURI)
	if err != nil {
		raise(AlarmFetch, "jwks: %v", err)
		return
	}
	if cc := hdr.Get("Cache-Control"); noCache(cc) {
		raise(AlarmJWKSNoCache, "the JWKS is served with Cache-Control %q: it can differ per request, and a rogue key shown to one relying party may never be seen here", cc)
	}
	var set jwk.Set
	if err := json.Unmarshal(b, &set); err != nil {
		raise(AlarmFetch, "jwks: %s is not a JWK Set: %v", disc.JWKSURI, err)
		return
	}
	var unlisted []string
	for _, k := range set.Keys {
		mk, ok := w.known[k.Kid]
		if !ok || k.Kty != mk.Kty || k.Crv != mk.Crv || k.X != mk.X || k.Y != mk.Y {
			unlisted = append(unlisted, k.Kid)
		}
	}
	if len(unlisted) > 0 {
		slices.Sort(unlisted)
		raise(AlarmUnlistedKey, "the JWKS at %s holds kids %s that no verified manifest lists: tokens they sign were not signed by the enclave", disc.JWKSURI, strings.Join(unlisted, ","))
	}
}

// checkTLSKey raises AlarmIssuerTLSKey unless the issuer URL's certificate
// carries a TLS key a verified manifest names.
func (w *Watcher) checkTLSKey(leaf *x509.Certificate, raise func(reason, format string, args ...any)) {
	if leaf == nil {
		raise(AlarmIssuerTLSKey, "the issuer URL was served without TLS, but a verified manifest says the enclave terminates TLS for it")
		return
	}
	der, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	sum := sha256.Sum256(der)
	if got := hex.EncodeToString(sum[:]); err != nil || !w.tlsKeys[got] {
		raise(AlarmIssuerTLSKey, "the issuer URL's certificate (issuer %q) carries key %s, which no verified manifest names: something other than the attested enclave terminates TLS for the issuer origin", leaf.Issuer.CommonName, got)
	}
}

// noCache reports whether a Cache-Control value forbids caching.
func noCache(cc string) bool {
	for _, d := range strings.Split(strings.ToLower(cc), ",") {
		d = strings.TrimSpace(d)
		switch {
		case d == "no-cache" || d == "no-store" || strings.HasPrefix(d, "no-cache="):
			return true
		case strings.HasPrefix(d, "max-age="):
			if n, err := strconv.Atoi(strings.Trim(d[len("max-age="):], `"`)); err != nil || n <= 0 {
				return true
			}
		}
	}
	return false
}

// Run calls Round every interval until ctx is done.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
