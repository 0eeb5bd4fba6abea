package audit

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const testWallet = "0x52908400098527886e0f7030069857d2e4169ee7"

// validRecord is a record every Store accepts; tests change one field.
func validRecord() Record {
	return Record{
		Time:         time.Date(2025, 11, 28, 18, 12, 3, 456789000, time.UTC),
		Kind:         KindOIDCJWT,
		Outcome:      OutcomeOK,
		Wallet:       testWallet,
		BearerSHA256: HashBearer("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIweDUyIn0.c2ln"),
		Audience:     "sts.amazonaws.com",
		TTLSeconds:   300,
		Kid:          "qOfvA8l3bBJW0C-rBGUZq3HqmXB0Jr3mXTvuYcmmPMY",
		JTI:          "42",
		Detail:       "minted",
		Client:       "192.0.2.1",
		Count:        1,
	}
}

func TestValidate(t *testing.T) {
	const rawJWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIweDUyIn0.c2ln"
	tests := []struct {
		name   string
		modify func(*Record)
		ok     bool
		secret string // must not appear in the error
	}{
		{"valid", func(r *Record) {}, true, ""},
		{"unknown wallet", func(r *Record) { r.Wallet = WalletUnknown }, true, ""},
		{"no bearer", func(r *Record) { r.BearerSHA256 = "" }, true, ""},
		{"refusal kind", func(r *Record) { r.Outcome = "sign_in_rejected" }, true, ""},
		{"host asserted", func(r *Record) { r.HostAssertedWallet = true }, true, ""},
		{"negative ttl recorded as asked", func(r *Record) { r.TTLSeconds = -5 }, true, ""},
		{"detail at limit", func(r *Record) { r.Detail = strings.Repeat("x", MaxDetailLen) }, true, ""},
		{"non-UTC time", func(r *Record) { r.Time = r.Time.In(time.FixedZone("x", 3600)) }, true, ""},

		{"zero time", func(r *Record) { r.Time = time.Time{} }, false, ""},
		{"time before 1970", func(r *Record) { r.Time = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }, false, ""},
		{"time after 9999", func(r *Record) { r.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false, ""},

		{"empty kind", func(r *Record) { r.Kind = "" }, false, ""},
		{"upper-case kind", func(r *Record) { r.Kind = "OIDC_JWT" }, false, ""},
		{"kebab-case kind", func(r *Record) { r.Kind = "oidc-jwt" }, false, ""},
		{"kind with space", func(r *Record) { r.Kind = "oidc jwt" }, false, ""},
		{"kind with double underscore", func(r *Record) { r.Kind = "oidc__jwt" }, false, ""},
		{"kind with leading underscore", func(r *Record) { r.Kind = "_oidc" }, false, ""},
		{"kind with trailing underscore", func(r *Record) { r.Kind = "oidc_" }, false, ""},
		{"kind with leading digit", func(r *Record) { r.Kind = "1oidc" }, false, ""},
		{"kind too long", func(r *Record) { r.Kind = strings.Repeat("a", 65) }, false, ""},
		{"empty outcome", func(r *Record) { r.Outcome = "" }, false, ""},
		{"outcome with capitals", func(r *Record) { r.Outcome = "Unauthorized" }, false, ""},
		{"outcome with space", func(r *Record) { r.Outcome = "policy refused" }, false, ""},

		{"empty wallet", func(r *Record) { r.Wallet = "" }, false, ""},
		{"checksummed wallet", func(r *Record) { r.Wallet = "0x52908400098527886E0F7030069857D2E4169EE7" }, false, ""},
		{"wallet 0X prefix", func(r *Record) { r.Wallet = "0X52908400098527886e0f7030069857d2e4169ee7" }, false, ""},
		{"wallet without prefix", func(r *Record) { r.Wallet = "52908400098527886e0f7030069857d2e4169ee7" }, false, ""},
		{"wallet too short", func(r *Record) { r.Wallet = testWallet[:41] }, false, ""},
		{"wallet too long", func(r *Record) { r.Wallet = testWallet + "0" }, false, ""},
		{"wallet non-hex", func(r *Record) { r.Wallet = "0x52908400098527886e0f7030069857d2e4169eeg" }, false, ""},
		{"wallet Unknown", func(r *Record) { r.Wallet = "Unknown" }, false, ""},

		{"raw bearer header", func(r *Record) { r.BearerSHA256 = "Bearer xyz" }, false, "xyz"},
		{"raw JWT", func(r *Record) { r.BearerSHA256 = rawJWT }, false, "eyJ"},
		{"64-char base64url token", func(r *Record) {
			r.BearerSHA256 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
		}, false, "abcdefghij"},
		{"upper-case digest", func(r *Record) { r.BearerSHA256 = strings.ToUpper(HashBearer("t")) }, false, ""},
		{"digest too short", func(r *Record) { r.BearerSHA256 = HashBearer("t")[:63] }, false, ""},
		{"digest too long", func(r *Record) { r.BearerSHA256 = HashBearer("t") + "0" }, false, ""},
		{"digest with prefix", func(r *Record) { r.BearerSHA256 = "sha256:" + HashBearer("t") }, false, ""},

		{"audience too long", func(r *Record) { r.Audience = strings.Repeat("a", MaxAudienceLen+1) }, false, ""},
		{"audience invalid UTF-8", func(r *Record) { r.Audience = "sts\xff" }, false, ""},
		{"audience with NUL", func(r *Record) { r.Audience = "sts\x00" }, false, ""},
		{"kid too long", func(r *Record) { r.Kid = strings.Repeat("k", MaxKidLen+1) }, false, ""},
		{"jti too long", func(r *Record) { r.JTI = strings.Repeat("j", MaxJTILen+1) }, false, ""},
		{"detail too long", func(r *Record) { r.Detail = strings.Repeat("x", MaxDetailLen+1) }, false, ""},
		{"detail invalid UTF-8", func(r *Record) { r.Detail = "\xc3" }, false, ""},
		{"aggregate count", func(r *Record) { r.Count = 100000 }, true, ""},
		{"count zero", func(r *Record) { r.Count = 0 }, false, ""},
		{"count negative", func(r *Record) { r.Count = -1 }, false, ""},
		{"client too long", func(r *Record) { r.Client = strings.Repeat("c", MaxClientLen+1) }, false, ""},
		{"client with NUL", func(r *Record) { r.Client = "192.0.2.1\x00" }, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRecord()
			tt.modify(&r)
			err := r.Validate()
			if tt.ok {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			if !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("Validate() = %v, want it to wrap ErrInvalidRecord", err)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("Validate() error %q repeats the rejected value", err)
			}
		})
	}
}

func TestHashBearer(t *testing.T) {
	// echo -n token | sha256sum
	const want = "3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0"
	if got := HashBearer("token"); got != want {
		t.Errorf("HashBearer(token) = %s, want %s", got, want)
	}
	if got := HashBearer(""); got != "" {
		t.Errorf("HashBearer(\"\") = %q, want \"\"", got)
	}
}

func TestPrepare(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 6007008, time.UTC)
	long := strings.Repeat("é", MaxDetailLen) // 2 bytes each: the cut falls inside a rune
	tests := []struct {
		name   string
		modify func(*Record)
		check  func(t *testing.T, got Record)
	}{
		{"zero time is now, to the microsecond", func(r *Record) { r.Time = time.Time{} }, func(t *testing.T, got Record) {
			if want := time.Date(2025, 1, 2, 3, 4, 5, 6007000, time.UTC); got.Time != want {
				t.Errorf("Time = %v, want %v", got.Time, want)
			}
		}},
		{"time made UTC", func(r *Record) {
			r.Time = time.Date(2025, 6, 1, 12, 0, 0, 999, time.FixedZone("CEST", 7200))
		}, func(t *testing.T, got Record) {
			if want := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC); got.Time != want {
				t.Errorf("Time = %v, want %v", got.Time, want)
			}
		}},
		{"long detail cut at a rune boundary", func(r *Record) { r.Detail = long }, func(t *testing.T, got Record) {
			if len(got.Detail) != MaxDetailLen || !utf8.ValidString(got.Detail) || !strings.HasPrefix(long, got.Detail) {
				t.Errorf("Detail is %d bytes, valid UTF-8 %v", len(got.Detail), utf8.ValidString(got.Detail))
			}
		}},
		{"odd cut drops the split rune", func(r *Record) { r.Detail = "x" + long }, func(t *testing.T, got Record) {
			if len(got.Detail) != MaxDetailLen-1 || !utf8.ValidString(got.Detail) {
				t.Errorf("Detail is %d bytes, valid UTF-8 %v", len(got.Detail), utf8.ValidString(got.Detail))
			}
		}},
		{"client-chosen audience cleaned", func(r *Record) { r.Audience = "a\x00b\xffc" + strings.Repeat("z", 2*MaxAudienceLen) }, func(t *testing.T, got Record) {
			if !strings.HasPrefix(got.Audience, "a\uFFFDb\uFFFDc") || len(got.Audience) > MaxAudienceLen {
				t.Errorf("Audience = %.20q… (%d bytes)", got.Audience, len(got.Audience))
			}
		}},
		{"count 0 is 1", func(r *Record) { r.Count = 0 }, func(t *testing.T, got Record) {
			if got.Count != 1 {
				t.Errorf("Count = %d, want 1", got.Count)
			}
		}},
		{"client cleaned and cut", func(r *Record) { r.Client = "\xff" + strings.Repeat("c", 2*MaxClientLen) }, func(t *testing.T, got Record) {
			if !strings.HasPrefix(got.Client, "\uFFFDc") || len(got.Client) > MaxClientLen {
				t.Errorf("Client = %.20q… (%d bytes)", got.Client, len(got.Client))
			}
		}},
		{"clean fields untouched", func(r *Record) {}, func(t *testing.T, got Record) {
			want := validRecord()
			want.Time = want.Time.Truncate(time.Microsecond)
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRecord()
			tt.modify(&r)
			got, err := prepare(r, now)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
		})
	}

	t.Run("preset seq refused", func(t *testing.T) {
		r := validRecord()
		r.Seq = 7
		if _, err := prepare(r, now); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("prepare = %v, want ErrInvalidRecord", err)
		}
	})
	t.Run("raw bearer still refused", func(t *testing.T) {
		r := validRecord()
		r.BearerSHA256 = "Bearer xyz"
		if _, err := prepare(r, now); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("prepare = %v, want ErrInvalidRecord", err)
		}
	})
}

// FuzzPrepare checks that whatever a client puts in the fields it controls,
// the record is stored (cleaned), never refused, and never grows.
func FuzzPrepare(f *testing.F) {
	f.Add("sts.amazonaws.com", "kid", "1", "detail")
	f.Add("\xff\x00", "\xc3", "", strings.Repeat("é", 600))
	f.Fuzz(func(t *testing.T, audience, kid, jti, detail string) {
		r := validRecord()
		r.Audience, r.Kid, r.JTI, r.Detail = audience, kid, jti, detail
		got, err := prepare(r, time.Now())
		if err != nil {
			t.Fatalf("prepare refused client text: %v", err)
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("prepared record does not validate: %v", err)
		}
		if r.Validate() == nil {
			want := r
			want.Time = want.Time.Truncate(time.Microsecond)
			if got != want {
				t.Fatalf("prepare changed a valid record: got %+v, want %+v", got, want)
			}
		}
	})
}
