package cpio

import (
	"bytes"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse (a ramdisk read from an EIF someone else built) and
// checks that what parses stays in bounds and that archives Write accepts parse back the same.
func FuzzParse(f *testing.F) {
	good, _ := Archive([]Entry{Dir("d", 0o755), File("d/f", 0o644, []byte("hello")), File("g", 0o600, nil)})
	f.Add(good)
	f.Add(good[:len(good)-4])
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Parse(b, 64)
		if err != nil {
			return
		}
		var entries []Entry
		for _, r := range recs {
			if int(r.FileSize) != len(r.Data) || r.NameSize != uint32(len(r.Name)+1) {
				t.Fatalf("record %+v: sizes disagree with the data", r.Header)
			}
			entries = append(entries, Entry{Name: r.Name, Mode: r.Mode, Data: r.Data})
		}
		if Check(entries) != nil {
			return
		}
		again, err := Archive(entries)
		if err != nil {
			t.Fatal(err)
		}
		recs2, err := Parse(again, 64)
		if err != nil || len(recs2) != len(recs) {
			t.Fatalf("re-written archive: %d records, %v", len(recs2), err)
		}
		for i := range recs {
			if recs2[i].Name != recs[i].Name || recs2[i].Mode != recs[i].Mode || !bytes.Equal(recs2[i].Data, recs[i].Data) {
				t.Fatalf("record %d changed on re-writing", i)
			}
		}
	})
}
