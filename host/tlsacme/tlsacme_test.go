package tlsacme

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Domain: "keys.example.com", StorageDir: "/var/lib/agentkeys-host/tls"}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // substring; empty means valid
	}{
		{"minimal", func(c *Config) {}, ""},
		{"everything", func(c *Config) {
			c.CA = "https://acme-staging-v02.api.letsencrypt.org/directory"
			c.Email = "ops@example.com"
			c.HTTPPort, c.TLSPort = 5002, 5001
		}, ""},
		{"single label", func(c *Config) { c.Domain = "localhost" }, ""},
		{"punycode", func(c *Config) { c.Domain = "xn--bcher-kva.example" }, ""},
		{"digits and hyphens", func(c *Config) { c.Domain = "a-1.b2.example" }, ""},

		{"no domain", func(c *Config) { c.Domain = "" }, "TLS domain is required"},
		{"url", func(c *Config) { c.Domain = "https://keys.example.com/" }, `is a URL; give the bare name "keys.example.com"`},
		{"port", func(c *Config) { c.Domain = "keys.example.com:443" }, `has a port; give the bare name "keys.example.com"`},
		{"wildcard", func(c *Config) { c.Domain = "*.example.com" }, "is a wildcard"},
		{"ipv4", func(c *Config) { c.Domain = "192.0.2.1" }, "is an IP address"},
		{"ipv6", func(c *Config) { c.Domain = "[2001:db8::1]" }, "is an IP address"},
		{"trailing dot", func(c *Config) { c.Domain = "keys.example.com." }, `ends with a dot; give "keys.example.com"`},
		{"upper case", func(c *Config) { c.Domain = "Keys.Example.com" }, `give "keys.example.com"`},
		{"empty label", func(c *Config) { c.Domain = "keys..example.com" }, "empty label"},
		{"leading hyphen", func(c *Config) { c.Domain = "-keys.example.com" }, "starts or ends with '-'"},
		{"underscore", func(c *Config) { c.Domain = "my_keys.example.com" }, `contains '_'`},
		{"path", func(c *Config) { c.Domain = "example.com/keys" }, `contains '/'`},
		{"unicode", func(c *Config) { c.Domain = "bücher.example" }, "xn-- form"},
		{"long label", func(c *Config) { c.Domain = strings.Repeat("a", 64) + ".example" }, "longer than 63"},
		{"long name", func(c *Config) { c.Domain = strings.Repeat("a.", 127) + "aa" }, "at most 253"},

		{"http CA", func(c *Config) { c.CA = "http://ca.example/dir" }, "is not an https:// URL"},
		{"CA without scheme", func(c *Config) { c.CA = "acme-v02.api.letsencrypt.org/directory" }, "is not an https:// URL"},
		{"bad email", func(c *Config) { c.Email = "ops" }, "is not a plain address"},
		{"email with name", func(c *Config) { c.Email = "Ops <ops@example.com>" }, "is not a plain address"},
		{"no storage", func(c *Config) { c.StorageDir = "" }, "storage directory is required"},
		{"negative port", func(c *Config) { c.HTTPPort = -1 }, "HTTP challenge port -1 is out of range"},
		{"port too big", func(c *Config) { c.TLSPort = 65536 }, "TLS challenge port 65536 is out of range"},
		{"same ports", func(c *Config) { c.HTTPPort = 443 }, "both 443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRedirectHandler(t *testing.T) {
	tests := []struct {
		name, method, target, host string
		wantCode                   int
		wantLocation               string
	}{
		{"get", "GET", "/.well-known/openid-configuration", "keys.example.com", 308, "https://keys.example.com/.well-known/openid-configuration"},
		{"head", "HEAD", "/jwks", "keys.example.com", 308, "https://keys.example.com/jwks"},
		{"query kept", "GET", "/a/b?x=1&y=%2F", "keys.example.com", 308, "https://keys.example.com/a/b?x=1&y=%2F"},
		{"escaped path kept", "GET", "/a%2Fb", "keys.example.com", 308, "https://keys.example.com/a%2Fb"},
		{"root", "GET", "/", "keys.example.com", 308, "https://keys.example.com/"},
		{"port dropped", "GET", "/x", "keys.example.com:80", 308, "https://keys.example.com/x"},
		{"host lowercased", "GET", "/x", "Keys.Example.COM", 308, "https://keys.example.com/x"},
		{"ipv4", "GET", "/x", "192.0.2.1:8080", 308, "https://192.0.2.1/x"},
		{"ipv6", "GET", "/x", "[2001:db8::1]:80", 308, "https://[2001:db8::1]/x"},
		{"double slash stays on host", "GET", "//evil.example/x", "keys.example.com", 308, "https://keys.example.com//evil.example/x"},

		{"post", "POST", "/token", "keys.example.com", 400, ""},
		{"put", "PUT", "/x", "keys.example.com", 400, ""},
		{"options", "OPTIONS", "/x", "keys.example.com", 400, ""},
		{"no host", "GET", "/x", "", 400, ""},
		{"host with userinfo", "GET", "/x", "user@evil.example", 400, ""},
		{"host with path", "GET", "/x", "evil.example/x", 400, ""},
	}
	h := RedirectHandler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://placeholder"+tt.target, nil)
			r.Host = tt.host
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.wantCode {
				t.Fatalf("status %d, want %d", w.Code, tt.wantCode)
			}
			if got := w.Header().Get("Location"); got != tt.wantLocation {
				t.Fatalf("Location %q, want %q", got, tt.wantLocation)
			}
		})
	}
}

func TestNewStorageDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "tls")
	m, err := New(Config{Domain: "keys.example.com", StorageDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close() // idempotent
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Errorf("storage directory mode %v, want 0700", fi.Mode().Perm())
	}

	if runtime.GOOS == "windows" {
		return
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Domain: "keys.example.com", StorageDir: open, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("New with a world-readable storage directory: %v, want an error suggesting chmod 700", err)
	}
}

func TestTLSConfigProtocols(t *testing.T) {
	m, err := New(Config{
		Domain:     "keys.example.com",
		StorageDir: filepath.Join(t.TempDir(), "tls"),
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.TLSConfig()
	if c.GetCertificate == nil {
		t.Error("TLSConfig has no GetCertificate")
	}
	want := []string{"h2", "http/1.1", "acme-tls/1"}
	if strings.Join(c.NextProtos, ",") != strings.Join(want, ",") {
		t.Errorf("NextProtos %q, want %q", c.NextProtos, want)
	}
	// Requests that are not ACME challenges reach the fallback.
	w := httptest.NewRecorder()
	m.HTTPHandler(http.NotFoundHandler()).ServeHTTP(w, httptest.NewRequest("GET", "http://keys.example.com/x", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("fallback: status %d, want 404", w.Code)
	}
}
