package eif

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Metadata is the JSON of the metadata section (EifIdentityInfo in src/defs/mod.rs). It is not
// measured: no PCR depends on it.
type Metadata struct {
	ImageName      string          `json:"ImageName"`
	ImageVersion   string          `json:"ImageVersion"`
	BuildMetadata  BuildMetadata   `json:"BuildMetadata"`
	DockerInfo     json.RawMessage `json:"DockerInfo"`     // `docker image inspect` output
	CustomMetadata json.RawMessage `json:"CustomMetadata"` // null when none was given
}

// BuildMetadata describes the build environment (EifBuildInfo).
type BuildMetadata struct {
	BuildTime        string `json:"BuildTime"`
	BuildTool        string `json:"BuildTool"`
	BuildToolVersion string `json:"BuildToolVersion"`
	OperatingSystem  string `json:"OperatingSystem"`
	KernelVersion    string `json:"KernelVersion"`
}

// MarshalMetadata encodes m for a metadata section as serde_json::to_vec would: compact, fields in
// the reference's order, no HTML escaping. Empty DockerInfo or CustomMetadata are written as null.
// Being the caller's values only, it is as deterministic as they are (set BuildTime yourself).
func MarshalMetadata(m Metadata) ([]byte, error) {
	if len(m.DockerInfo) == 0 {
		m.DockerInfo = json.RawMessage("null")
	}
	if len(m.CustomMetadata) == 0 {
		m.CustomMetadata = json.RawMessage("null")
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(m); err != nil {
		return nil, fmt.Errorf("eif: failed to encode metadata: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Metadata decodes the image's metadata section, reading at most maxBytes of it (the section is
// `docker image inspect` output, so its size is the image builder's choice; 1 MiB is plenty for
// nitro-cli's). It returns nil and no error when the image has no metadata section (versions 2
// and 3).
func (im *Image) Metadata(maxBytes int64) (*Metadata, error) {
	for i, s := range im.Sections {
		if s.Type != SectionMetadata {
			continue
		}
		if maxBytes < 0 || s.Size > uint64(maxBytes) {
			return nil, fmt.Errorf("eif: metadata section is %d bytes, more than the %d allowed", s.Size, maxBytes)
		}
		b, err := io.ReadAll(im.SectionData(i))
		if err != nil {
			return nil, fmt.Errorf("eif: failed to read the metadata section: %w", err)
		}
		var m Metadata
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("eif: failed to decode the metadata section: %w", err)
		}
		return &m, nil
	}
	if im.r == nil {
		return nil, errors.New("eif: Metadata called on an Image that Parse did not return")
	}
	return nil, nil
}
