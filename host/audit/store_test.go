package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// stores are the Store implementations every contract test runs against.
var stores = []struct {
	name string
	open func(t *testing.T) Store
}{
	{"Memory", func(t *testing.T) Store { return NewMemory() }},
	{"SQLite", func(t *testing.T) Store {
		s, err := OpenSQLite(filepath.Join(t.TempDir(), "audit.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

func forEachStore(t *testing.T, f func(t *testing.T, s Store)) {
	for _, impl := range stores {
		t.Run(impl.name, func(t *testing.T) {
			s := impl.open(t)
			t.Cleanup(func() { s.Close() })
			f(t, s)
		})
	}
}

// recordN is a valid record told apart from others by n.
func recordN(n int) Record {
	r := validRecord()
	r.Time = r.Time.Add(time.Duration(n) * time.Millisecond)
	r.Detail = fmt.Sprintf("record %d", n)
	r.JTI = fmt.Sprint(n)
	r.HostAssertedWallet = n%2 == 1
	return r
}

func TestStoreAppendList(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		var appended []Record
		for i := range 5 {
			got, err := s.Append(ctx, recordN(i))
			if err != nil {
				t.Fatal(err)
			}
			want := recordN(i)
			want.Seq = int64(i + 1)
			want.Time = want.Time.Truncate(time.Microsecond)
			if got != want {
				t.Fatalf("Append returned %+v, want %+v", got, want)
			}
			appended = append(appended, got)
		}
		tests := []struct {
			afterSeq int64
			limit    int
			want     []Record
		}{
			{0, 10, appended},
			{0, 2, appended[:2]},
			{2, 2, appended[2:4]},
			{4, 10, appended[4:]},
			{5, 10, nil},
			{99, 10, nil},
		}
		for _, tt := range tests {
			got, err := s.List(ctx, tt.afterSeq, tt.limit)
			if err != nil {
				t.Fatalf("List(%d, %d): %v", tt.afterSeq, tt.limit, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("List(%d, %d) returned %d records, want %d", tt.afterSeq, tt.limit, len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("List(%d, %d)[%d] = %+v, want %+v", tt.afterSeq, tt.limit, i, got[i], tt.want[i])
				}
			}
		}
		if err := s.Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})
}

func TestStoreListArguments(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		for _, tt := range []struct {
			afterSeq int64
			limit    int
		}{{-1, 10}, {0, 0}, {0, -1}} {
			if _, err := s.List(context.Background(), tt.afterSeq, tt.limit); err == nil {
				t.Errorf("List(%d, %d) succeeded, want an error", tt.afterSeq, tt.limit)
			}
		}
	})
}

func TestListLimit(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{1, 1}, {999, 999}, {1000, 1000}, {1001, 1000}, {1 << 40, 1000}} {
		if got, err := listLimit(0, tt.in); err != nil || got != tt.want {
			t.Errorf("listLimit(0, %d) = %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestStoreRefusesInvalidRecord(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, modify := range []func(*Record){
			func(r *Record) { r.BearerSHA256 = "Bearer xyz" },
			func(r *Record) { r.Wallet = "0xABC" },
			func(r *Record) { r.Kind = "" },
			func(r *Record) { r.Seq = 1 },
		} {
			r := validRecord()
			modify(&r)
			if _, err := s.Append(ctx, r); !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("Append(%+v) = %v, want ErrInvalidRecord", r, err)
			}
		}
		if got, err := s.List(ctx, 0, 10); err != nil || len(got) != 0 {
			t.Errorf("List after refused Appends = %d records, %v; want none", len(got), err)
		}
	})
}

func TestStoreAppendCanceledContext(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Append(ctx, validRecord()); !errors.Is(err, context.Canceled) {
			t.Errorf("Append = %v, want context.Canceled", err)
		}
		if got, err := s.List(context.Background(), 0, 10); err != nil || len(got) != 0 {
			t.Errorf("List = %d records, %v; want none", len(got), err)
		}
	})
}

func TestStoreClosed(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if _, err := s.Append(ctx, validRecord()); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, validRecord()); !errors.Is(err, ErrClosed) {
			t.Errorf("Append after Close = %v, want ErrClosed", err)
		}
		if _, err := s.List(ctx, 0, 10); !errors.Is(err, ErrClosed) {
			t.Errorf("List after Close = %v, want ErrClosed", err)
		}
		if err := s.Ping(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("Ping after Close = %v, want ErrClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
	})
}

func TestMemorySetFailure(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	if _, err := m.Append(ctx, recordN(0)); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("disk on fire")
	m.SetFailure(broken)
	ops := []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := m.Append(ctx, recordN(1)); return err }},
		{"List", func() error { _, err := m.List(ctx, 0, 10); return err }},
		{"Ping", func() error { return m.Ping(ctx) }},
	}
	for _, op := range ops {
		if err := op.call(); !errors.Is(err, broken) {
			t.Errorf("%s with failure set = %v, want it to wrap %v", op.name, err, broken)
		}
	}

	m.SetFailure(nil)
	for _, op := range ops {
		if err := op.call(); err != nil {
			t.Errorf("%s after SetFailure(nil) = %v", op.name, err)
		}
	}
	got, err := m.List(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	// Record 0, then record 1 from the successful Append above; the failed
	// Append stored nothing.
	if len(got) != 2 || got[0].Detail != "record 0" || got[1].Detail != "record 1" || got[1].Seq != 2 {
		t.Errorf("List = %+v, want records 0 and 1 with Seq 1 and 2", got)
	}
}

func TestMemoryListCapped(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	for i := range MaxListLimit + 5 {
		if _, err := m.Append(ctx, recordN(i)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.List(ctx, 0, MaxListLimit+5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxListLimit {
		t.Errorf("List returned %d records, want the cap %d", len(got), MaxListLimit)
	}
}
