// Package strictjson decodes a JSON object into a Go struct strictly: every key
// must be one the struct names, spelled exactly as its json tag spells it, and
// no key may appear twice in one object.
//
// encoding/json alone is lenient in three ways that matter across a trust
// boundary: it ignores unknown fields (DisallowUnknownFields fixes that), it
// matches keys to fields case-insensitively ("Audience" and "AUDIENCE" both fill
// `json:"audience"`), and when a key repeats, the last one wins. A proxy, a log
// or an auditor reading the same bytes with another parser may then see another
// request than the one the host acted on. Decode refuses all three.
//
// # Start here
//
//	var body httpapi.MintJWTRequest
//	if err := strictjson.Decode(data, &body, strictjson.Limits{}); err != nil {
//		// 400: err says which key is wrong
//	}
//
// Decode first walks the tokens (json.Decoder.Token) alongside the target's
// type, checking keys against the struct's json names and counting depth; only
// then does it decode, with DisallowUnknownFields, and it refuses trailing data.
// Keys of maps and of fields typed any or json.RawMessage are not checked
// against names, but they are checked for duplicates.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// Default limits.
const (
	DefaultMaxSize  = 64 << 10
	DefaultMaxDepth = 32
)

// Limits bound what Decode reads; zero fields take the defaults.
type Limits struct {
	MaxSize  int // bytes (default DefaultMaxSize)
	MaxDepth int // nesting of objects and arrays (default DefaultMaxDepth)
}

// Error is a strictness violation or a syntax error, with the JSON path of the
// offending key (such as "audiences[2]" or "ttl_seconds").
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Decode decodes data, which must hold exactly one JSON object, into v, a
// pointer to a struct.
func Decode(data []byte, v any, lim Limits) error {
	if lim.MaxSize <= 0 {
		lim.MaxSize = DefaultMaxSize
	}
	if lim.MaxDepth <= 0 {
		lim.MaxDepth = DefaultMaxDepth
	}
	if len(data) > lim.MaxSize {
		return &Error{Msg: fmt.Sprintf("JSON is larger than %d bytes", lim.MaxSize)}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictjson: Decode needs a non-nil pointer")
	}
	c := &checker{dec: json.NewDecoder(bytes.NewReader(data)), maxDepth: lim.MaxDepth}
	c.dec.UseNumber()
	tok, err := c.dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return &Error{Msg: "want a JSON object"}
	}
	if err := c.object(rv.Type().Elem(), "", 1); err != nil {
		return err
	}
	if _, err := c.dec.Token(); err != io.EOF {
		return &Error{Msg: "trailing data after the JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &Error{Path: te.Field, Msg: fmt.Sprintf("want %s, not a JSON %s", typeName(te.Type), te.Value)}
		}
		return &Error{Msg: err.Error()}
	}
	return nil
}

func syntaxError(err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Msg: "JSON ends early"}
	}
	return &Error{Msg: "not valid JSON: " + err.Error()}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

type checker struct {
	dec      *json.Decoder
	maxDepth int
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// value checks the value whose first token the caller has not yet read.
func (c *checker) value(t reflect.Type, path string, depth int) error {
	tok, err := c.dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: its type is the decoder's to check
	}
	if depth+1 > c.maxDepth {
		return &Error{Path: path, Msg: fmt.Sprintf("nested deeper than %d levels", c.maxDepth)}
	}
	switch d {
	case '{':
		return c.object(t, path, depth+1)
	case '[':
		return c.array(t, path, depth+1)
	}
	return &Error{Path: path, Msg: "not valid JSON"}
}

// elem strips pointers; nil means "any type": no names to check.
func elem(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessage || (t != nil && t.Kind() == reflect.Interface) {
		return nil
	}
	return t
}

func (c *checker) object(t reflect.Type, path string, depth int) error {
	t = elem(t)
	var names map[string]reflect.Type
	var folded map[string]string
	var valueType reflect.Type // a map's element type
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			names, folded = fieldsOf(t)
		case reflect.Map:
			valueType = t.Elem()
		}
	}
	seen := map[string]bool{}
	for c.dec.More() {
		tok, err := c.dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		key, ok := tok.(string)
		if !ok {
			return &Error{Path: path, Msg: "not valid JSON"}
		}
		kpath := join(path, key)
		if seen[key] {
			return &Error{Path: kpath, Msg: "key appears twice"}
		}
		seen[key] = true
		ft := valueType
		if names != nil {
			var known bool
			ft, known = names[key]
			if !known {
				if want, ok := folded[strings.ToLower(key)]; ok {
					return &Error{Path: kpath, Msg: fmt.Sprintf("keys are case-sensitive; want %q", want)}
				}
				return &Error{Path: kpath, Msg: "unknown field"}
			}
		}
		if err := c.value(ft, kpath, depth); err != nil {
			return err
		}
	}
	if _, err := c.dec.Token(); err != nil { // '}'
		return syntaxError(err)
	}
	return nil
}

func (c *checker) array(t reflect.Type, path string, depth int) error {
	t = elem(t)
	var et reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		et = t.Elem()
	}
	for i := 0; c.dec.More(); i++ {
		if err := c.value(et, fmt.Sprintf("%s[%d]", path, i), depth); err != nil {
			return err
		}
	}
	if _, err := c.dec.Token(); err != nil { // ']'
		return syntaxError(err)
	}
	return nil
}

func join(path, key string) string {
	if len(key) > 64 {
		key = key[:64] + "…"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

type fields struct {
	names  map[string]reflect.Type
	folded map[string]string
}

var cache sync.Map // reflect.Type → fields

// fieldsOf lists a struct's JSON names as encoding/json sees them (exported
// fields, the tag's name or else the field's, fields of embedded structs
// promoted), and the same names lowercased, to name the right spelling.
func fieldsOf(t reflect.Type) (map[string]reflect.Type, map[string]string) {
	if f, ok := cache.Load(t); ok {
		return f.(fields).names, f.(fields).folded
	}
	f := fields{names: map[string]reflect.Type{}, folded: map[string]string{}}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if sf.Anonymous && name == "" {
				if et := elem(sf.Type); et != nil && et.Kind() == reflect.Struct {
					walk(et)
					continue
				}
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			f.names[name] = sf.Type
			f.folded[strings.ToLower(name)] = name
		}
	}
	walk(t)
	cache.Store(t, f)
	return f.names, f.folded
}
