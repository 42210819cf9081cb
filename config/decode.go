package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Parse runs in three steps:
//
//  1. check walks the YAML tree alongside the Go type it decodes into (the
//     file struct) and returns a clean copy for Decode: aliases resolved,
//     merge keys (<<) flattened, ${VAR} references expanded in values (never
//     in keys), and everything it rejected left out. It reports, with key
//     path and line, every unknown or duplicate key, every value of the wrong
//     YAML kind and every scalar its leaf type cannot read. It is generic: it
//     knows YAML kinds, yaml struct tags and the leaf interface, never a key.
//  2. yaml.v3 decodes the clean copy into the file struct; the leaf types'
//     UnmarshalYAML turn text into sizes, durations and numbers.
//  3. validate.go applies defaults and checks values against each other.
//
// Why not Decoder.KnownFields(true) on the raw file? Its errors carry a line
// but no key path ("field tokn not found in type config.adminFile"); a
// duplicate key makes it skip the whole mapping, and a bad merge key aborts
// the whole decode, so the rest of the file would go unchecked. And
// UnmarshalYAML cannot expand ${VAR}: it has no way to receive Parse's
// getenv. check does these jobs with paths, and its copy is one that Decode
// cannot fail on.

// Parse parses a configuration from data. getenv resolves ${VAR} references;
// nil means an empty environment. Relative secret file paths are relative to
// baseDir ("" = the working directory).
//
// On failure the error is an errors.Join of *Error values, one per problem in
// the order they appear in data, or a single error for a YAML syntax error.
func Parse(data []byte, getenv func(string) string, baseDir string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	root, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	d := &decoder{getenv: getenv, baseDir: baseDir,
		pos: map[string]*yaml.Node{}, raw: map[string]string{}, bad: map[string]bool{},
		locs: map[string]*time.Location{}}
	var f file
	if err := d.check("", root, reflect.TypeFor[file]()).Decode(&f); err != nil {
		d.add("", root, "internal error (please report): "+err.Error()) // check hands Decode only what it accepted
	}
	c := d.config(&f)
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseYAML returns the root node of the single document in data, or nil for
// an empty document.
func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("config: %w", err) // "yaml: line 3: ..."
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("config: line %d: a second YAML document; the file must hold exactly one", next.Line)
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("config: %w", err)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0], nil
	}
	return nil, nil
}

// decoder holds the state of one Parse. Its tables are keyed by key path
// ("apps[1].quotas.apis./cgi-bin/x.per_minute").
type decoder struct {
	getenv  func(string) string
	baseDir string
	pos     map[string]*yaml.Node // every path in the file → its value (null included)
	raw     map[string]string     // scalar paths → the text before expansion
	bad     map[string]bool       // paths check rejected; validation keeps quiet at and below them
	locs    map[string]*time.Location
	errs    []*Error
}

// check checks n, the value at path, against t, the Go type it decodes into,
// and returns the node Decode should see. See Parse.
func (d *decoder) check(path string, n *yaml.Node, t reflect.Type) *yaml.Node {
	n = resolve(n)
	d.pos[path] = n
	switch {
	case n == nil || isNull(n):
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	case isLeaf(t):
		if n.Kind != yaml.ScalarNode {
			return d.reject(path, n, "must be a single value, not "+kindName(n))
		}
		d.raw[path] = n.Value
		s, err := expand(n.Value, d.getenv)
		if err == nil {
			err = reflect.New(t).Interface().(leaf).parse(s)
		}
		if err != nil {
			return d.reject(path, n, err.Error())
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Line: n.Line, Column: n.Column}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.reject(path, n, "must be a list, not "+kindName(n))
		}
		out := &yaml.Node{Kind: yaml.SequenceNode}
		for i, item := range n.Content {
			c := d.check(index(path, i), item, t.Elem())
			if isNull(c) { // Decode would drop it and shift the indexes after it: keep an empty one
				c = &yaml.Node{Kind: yaml.MappingNode}
				if isLeaf(t.Elem()) {
					c = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str"} // a null item reads as ""
				}
			}
			out.Content = append(out.Content, c)
		}
		return out
	case n.Kind != yaml.MappingNode:
		if path == "" {
			return d.reject(path, n, "the top level must be a mapping of settings, not "+kindName(n))
		}
		return d.reject(path, n, "must be a mapping, not "+kindName(n))
	}
	fields := map[string]reflect.Type{} // a struct's keys; a map's keys are checked by their type
	for i := 0; t.Kind() == reflect.Struct && i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		fields[name] = t.Field(i).Type
	}
	out := &yaml.Node{Kind: yaml.MappingNode}
	for _, p := range d.pairs(path, n) {
		k := p.key.Value
		ft, ok := fields[k]
		if t.Kind() == reflect.Map {
			if err := reflect.New(t.Key()).Interface().(leaf).parse(k); err != nil {
				d.reject(join(path, k), resolve(p.val), err.Error())
				continue
			}
			ft, ok = t.Elem(), true
		}
		if !ok {
			d.add(join(path, k), p.key, "unknown key"+unknownKeyHint(k)).phase = phaseUnknownKeys
			continue
		}
		out.Content = append(out.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k},
			d.check(join(path, k), p.val, ft))
	}
	return out
}

// reject reports msg about the value n at path and returns the null that
// replaces it.
func (d *decoder) reject(path string, n *yaml.Node, msg string) *yaml.Node {
	d.add(path, n, msg)
	d.bad[path] = true
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
}

// unknownKeyHint points from a key people try to the one they mean.
func unknownKeyHint(key string) string {
	switch key {
	case "corpid":
		return " (a WeCom corpid goes in appid)"
	case "corpsecret", "appsecret", "app_secret":
		return " (use secret or secret_file)"
	}
	return ""
}

type pair struct{ key, val *yaml.Node }

// pairs returns the entries of mapping n in order, with YAML merge keys
// (`<<: *anchor`) flattened: explicit keys win over merged ones, and earlier
// merges over later ones. It reports and leaves out keys that are not plain
// scalars, duplicate keys and merges of anything but mappings.
func (d *decoder) pairs(path string, n *yaml.Node) []pair {
	var out []pair
	seen := map[string]bool{}
	merged := map[*yaml.Node]bool{n: true} // each merged once: no blow-up
	open := map[*yaml.Node]bool{n: true}   // being merged: merging one again is a cycle
	var collect func(n *yaml.Node, isMerged bool)
	collect = func(n *yaml.Node, isMerged bool) {
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch {
			case k.Kind == yaml.ScalarNode && k.Tag == "!!merge":
				merges = append(merges, resolve(v))
			case k.Kind != yaml.ScalarNode:
				d.add(path, k, "keys must be plain strings, not "+kindName(k)).phase = phaseKeys
			case seen[k.Value]:
				if !isMerged {
					d.add(join(path, k.Value), k, "duplicate key").phase = phaseKeys
				}
			default:
				seen[k.Value] = true
				out = append(out, pair{k, v})
			}
		}
		for _, v := range merges {
			items := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				items = v.Content
			}
			for _, it := range items {
				switch it = resolve(it); {
				case it.Kind != yaml.MappingNode || open[it]:
					d.add(join(path, "<<"), v, "must be a mapping or a list of mappings")
				case !merged[it]:
					merged[it], open[it] = true, true
					collect(it, true)
					open[it] = false
				}
			}
		}
	}
	collect(n, false)
	return out
}

// Error phases order errors at one spot (a mapping starts where its first
// key does) the way a reader meets them: the mapping's malformed keys, then
// its values and absent keys, then its unknown keys.
const (
	phaseKeys = iota
	phaseValues
	phaseUnknownKeys
)

// add records an error at path, positioned at n (nil: position unknown).
func (d *decoder) add(path string, n *yaml.Node, msg string) *Error {
	e := &Error{Key: path, Msg: msg, phase: phaseValues}
	if n != nil {
		e.Line, e.column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
	return e
}

// errorf records a validation error at path, positioned at its value or, for
// an absent key, at the closest enclosing one. It stays quiet at and below a
// path check rejected: that problem is reported already.
func (d *decoder) errorf(path, format string, args ...any) {
	var at *yaml.Node
	for p := path; ; p = parent(p) {
		if d.bad[p] {
			return
		}
		if at == nil {
			at = d.pos[p]
		}
		if p == "" {
			break
		}
	}
	d.add(path, at, fmt.Sprintf(format, args...))
}

// has reports whether the file gives path a non-null value, valid or not.
func (d *decoder) has(path string) bool {
	n := d.pos[path]
	return n != nil && !isNull(n)
}

// hint explains an empty value at path that came from ${...} references,
// which is nearly always an unset environment variable. It quotes the raw
// text, which is safe: a value that expanded to "" holds no literal text.
func (d *decoder) hint(path string) string {
	if raw := d.raw[path]; strings.Contains(raw, "${") {
		return fmt.Sprintf(" (%s expanded to \"\"; is the variable set?)", raw)
	}
	return ""
}

// err returns every recorded error, in the order they appear in the file.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(d.errs, func(a, b *Error) int {
		switch {
		case a.Line != b.Line:
			return a.Line - b.Line
		case a.column != b.column:
			return a.column - b.column
		}
		return a.phase - b.phase
	})
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 32; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a single value"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// parent returns the path of the mapping or list holding path.
func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// val is one setting of type T (string, int, bool, float64, int64 for byte
// sizes, or time.Duration). Its zero value is an absent setting.
type val[T any] struct {
	v   T
	set bool // the file gives a valid value
}

// leaf is what check needs of a val, and of a map's key type: parse, to try
// a value (a key) before Decode.
type leaf interface{ parse(string) error }

func isLeaf(t reflect.Type) bool { return reflect.PointerTo(t).Implements(reflect.TypeFor[leaf]()) }

// UnmarshalYAML types the scalar n, which check has expanded and tried.
func (l *val[T]) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && l.parse(n.Value) == nil {
		l.set = true
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: unchecked value", n.Line)}}
}

// parse sets l from s, which has been expanded.
func (l *val[T]) parse(s string) (err error) {
	switch p := any(&l.v).(type) {
	case *string:
		*p = s
	case *int:
		*p, err = parseInt(s)
	case *bool:
		*p, err = parseBool(s)
	case *float64:
		*p, err = parseFloat(s)
	case *int64:
		*p, err = parseSize(s)
	case *time.Duration:
		*p, err = parseDuration(s)
	default:
		panic(fmt.Sprintf("config: no parser for %T", l.v))
	}
	return err
}

// or returns l's value, or def when the file does not give one.
func (l val[T]) or(def T) T {
	if l.set {
		return l.v
	}
	return def
}

// MarshalYAML writes l the way parse reads it back.
func (l val[T]) MarshalYAML() (any, error) {
	switch v := any(l.v).(type) {
	case string:
		return escapeDollars(v), nil
	case int64:
		if s := formatSize(v); s != strconv.FormatInt(v, 10) {
			return s, nil
		}
	case time.Duration:
		return formatDuration(v), nil
	}
	return l.v, nil
}

// IsZero makes omitempty leave out what is not set.
func (l val[T]) IsZero() bool { return !l.set }

// some returns a set val of v, for WriteRedacted.
func some[T any](v T) val[T] { return val[T]{v: v, set: true} }

// nonZero returns a val of v that is unset when v is its type's zero value.
// (The tests' comparable helper hides the predeclared constraint.)
func nonZero[T ~string | ~int | ~int64](v T) val[T] {
	var zero T
	return val[T]{v: v, set: v != zero}
}

func parseInt(s string) (int, error) {
	n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 0)
	if err != nil {
		return 0, fmt.Errorf("must be an integer (got %q)", s)
	}
	return int(n), nil
}

func parseFloat(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("must be a number (got %q)", s)
	}
	return f, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("must be true or false (got %q)", s)
}

// parseDuration accepts Go duration syntax: 15s, 10m, 1h30m.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
			return 0, fmt.Errorf("invalid duration %q (missing unit, e.g. \"%ss\")", s, s)
		}
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d, nil
}

// Byte-size units. KB, MB and GB are decimal, as everywhere outside memory
// chips; KiB, MiB and GiB are binary.
const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// parseSize accepts a plain number of bytes or a number with a unit: B, KB,
// MB, GB, KiB, MiB, GiB (unit case-insensitive, optional space before it).
func parseSize(s string) (int64, error) {
	num := strings.TrimRightFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' })
	unit := strings.ToLower(s[len(num):])
	num = strings.TrimSpace(num)
	mult := map[string]int64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": kib, "mib": mib, "gib": gib}[unit]
	n, err := strconv.ParseInt(strings.ReplaceAll(num, "_", ""), 10, 64)
	if mult == 0 || err != nil {
		return 0, fmt.Errorf("invalid byte size %q (want bytes, or a number with B, KB, MB, GB, KiB, MiB or GiB)", s)
	}
	if n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return 0, fmt.Errorf("byte size %q is too large", s)
	}
	return n * mult, nil
}

// formatSize prints n the way parseSize reads it, in the largest binary unit
// that divides it exactly.
func formatSize(n int64) string {
	switch {
	case n != 0 && n%gib == 0:
		return fmt.Sprintf("%dGiB", n/gib)
	case n != 0 && n%mib == 0:
		return fmt.Sprintf("%dMiB", n/mib)
	case n != 0 && n%kib == 0:
		return fmt.Sprintf("%dKiB", n/kib)
	}
	return strconv.FormatInt(n, 10)
}

// formatDuration prints d as time.Duration.String does, without the zero
// minutes and seconds ("10m", not "10m0s").
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
