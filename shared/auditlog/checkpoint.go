package auditlog

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is the text of a C2SP tlog-checkpoint: the log's origin (the
// name of the enclave's checkpoint verifier key, such as
// "broker.example.com/audit"), the tree size and the root hash. The signed
// checkpoint is a signed note (golang.org/x/mod/sumdb/note) whose text is
// [Checkpoint.Format].
type Checkpoint struct {
	Origin string
	Tree   tlog.Tree
}

// Format returns the note text: three lines, no extension lines.
func (c Checkpoint) Format() string {
	return c.Origin + "\n" + strconv.FormatInt(c.Tree.N, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Tree.Hash[:]) + "\n"
}

// ParseCheckpoint parses the text of a checkpoint note (note.Note.Text, after
// note.Open checked the signature). Extension lines are refused: this log
// writes none.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return Checkpoint{}, fmt.Errorf("%w: a checkpoint is three lines ending in a newline", ErrInvalid)
	}
	origin := lines[0]
	if origin == "" || strings.ContainsAny(origin, " +\t") {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin %.64q", ErrInvalid, origin)
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint size %.32q", ErrInvalid, lines[1])
	}
	h, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize || base64.StdEncoding.EncodeToString(h) != lines[2] {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint root hash %.64q", ErrInvalid, lines[2])
	}
	if !bytes.Equal([]byte(text), []byte(Checkpoint{origin, tlog.Tree{N: n, Hash: tlog.Hash(h)}}.Format())) {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint not in canonical form", ErrInvalid)
	}
	return Checkpoint{Origin: origin, Tree: tlog.Tree{N: n, Hash: tlog.Hash(h)}}, nil
}
