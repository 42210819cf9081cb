package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The configuration is decoded by walking the yaml.Node tree by hand rather
// than with yaml.Unmarshal: that is how every error gets its key path and a
// line, how unknown keys are found (KnownFields errors carry neither), and how
// ${VAR} expansion happens on scalar values only, where it cannot inject YAML.

// decoder collects the errors of one Parse.
type decoder struct {
	getenv  func(string) string
	baseDir string
	errs    []*Error
	locs    map[string]*time.Location
}

// add records an error at key, positioned at n (nil: position unknown).
func (d *decoder) add(key string, n *yaml.Node, msg string) {
	e := &Error{Key: key, Msg: msg}
	if n != nil {
		e.Line, e.column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

// err returns every recorded error, in the order they appear in the file.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool {
		a, b := d.errs[i], d.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.column < b.column
	})
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// mapping is a YAML mapping being decoded. Every getter marks its key as
// known; done reports the keys nobody asked for.
type mapping struct {
	d     *decoder
	path  string
	pos   *yaml.Node            // where errors about absent keys point
	vals  map[string]*yaml.Node // key → value, merge keys (<<) flattened
	knode map[string]*yaml.Node // key → key node
	order []string
	used  map[string]bool
	bad   bool // not a mapping: its error is reported, keep quiet about its keys
}

// mapping starts decoding n, the value at path. n may be nil or null (an
// absent section: every getter then reports the key absent); pos positions
// errors about absent keys.
func (d *decoder) mapping(path string, n, pos *yaml.Node) *mapping {
	m := &mapping{d: d, path: path, pos: pos,
		vals: map[string]*yaml.Node{}, knode: map[string]*yaml.Node{}, used: map[string]bool{}}
	n = resolve(n)
	if n == nil || isNull(n) {
		return m
	}
	m.pos = n
	if n.Kind != yaml.MappingNode {
		msg := "must be a mapping, not " + kindName(n)
		if path == "" {
			msg = "the top level must be a mapping of settings, not " + kindName(n)
		}
		d.add(path, n, msg)
		m.bad = true
		return m
	}
	m.collect(n, false, 0)
	return m
}

// collect adds the pairs of mapping n. Explicit keys win over merged ones
// (YAML merge keys, `<<: *anchor`), and earlier merges over later ones.
func (m *mapping) collect(n *yaml.Node, merged bool, depth int) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			m.d.add(m.path, k, "keys must be plain strings, not "+kindName(k))
			continue
		}
		if _, dup := m.vals[k.Value]; dup {
			if !merged {
				m.d.add(join(m.path, k.Value), k, "duplicate key")
			}
			continue
		}
		m.vals[k.Value], m.knode[k.Value] = v, k
		m.order = append(m.order, k.Value)
	}
	for _, v := range merges {
		v = resolve(v)
		items := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			items = v.Content
		}
		for _, it := range items {
			it = resolve(it)
			if it.Kind != yaml.MappingNode || depth > 32 {
				m.d.add(join(m.path, "<<"), v, "must be a mapping or a list of mappings")
				continue
			}
			m.collect(it, true, depth+1)
		}
	}
}

// key returns the path of key in m.
func (m *mapping) key(key string) string { return join(m.path, key) }

// has reports whether key is present with a non-null value.
func (m *mapping) has(key string) bool {
	v := resolve(m.vals[key])
	return v != nil && !isNull(v)
}

// value returns key's value, or nil when it is absent or null.
func (m *mapping) value(key string) *yaml.Node {
	m.used[key] = true
	v := resolve(m.vals[key])
	if v == nil || isNull(v) {
		return nil
	}
	return v
}

// at returns the node an error about key points at.
func (m *mapping) at(key string) *yaml.Node {
	if v := m.vals[key]; v != nil {
		return v
	}
	return m.pos
}

// errorf records an error about key.
func (m *mapping) errorf(key, format string, args ...any) {
	if m.bad {
		return
	}
	m.d.add(m.key(key), m.at(key), fmt.Sprintf(format, args...))
}

// sub starts decoding the mapping under key.
func (m *mapping) sub(key string) *mapping {
	return m.d.mapping(m.key(key), m.value(key), m.at(key))
}

// done reports every key of m that no getter asked for.
func (m *mapping) done() {
	for _, k := range m.order {
		if !m.used[k] {
			msg := "unknown key"
			switch k {
			case "corpid":
				msg += " (a WeCom corpid goes in appid)"
			case "corpsecret", "appsecret", "app_secret":
				msg += " (use secret or secret_file)"
			}
			m.d.add(m.key(k), m.knode[k], msg)
		}
	}
}

// scalar returns the expanded value of key; ok is false when key is absent
// or null, or when an error was recorded.
func (m *mapping) scalar(key string) (s string, ok bool) {
	v := m.value(key)
	if v == nil {
		return "", false
	}
	return m.d.scalar(m.key(key), v)
}

// scalar returns the expanded value of node v found at path. A null is "".
func (d *decoder) scalar(path string, v *yaml.Node) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		d.add(path, v, "must be a single value, not "+kindName(v))
		return "", false
	}
	if isNull(v) {
		return "", true
	}
	s, err := expand(v.Value, d.getenv)
	if err != nil {
		d.add(path, v, err.Error())
		return "", false
	}
	return s, true
}

// get decodes key with parse into dst, leaving dst alone (its default) when
// key is absent. It reports whether dst was set.
func get[T any](m *mapping, key string, parse func(string) (T, error), dst *T) bool {
	s, ok := m.scalar(key)
	if !ok {
		return false
	}
	v, err := parse(s)
	if err != nil {
		m.errorf(key, "%v", err)
		return false
	}
	*dst = v
	return true
}

func (m *mapping) str(key string, dst *string) bool    { return get(m, key, parseString, dst) }
func (m *mapping) integer(key string, dst *int) bool   { return get(m, key, parseInt, dst) }
func (m *mapping) boolean(key string, dst *bool) bool  { return get(m, key, parseBool, dst) }
func (m *mapping) float(key string, dst *float64) bool { return get(m, key, parseFloat, dst) }
func (m *mapping) size(key string, dst *int64) bool    { return get(m, key, parseSize, dst) }
func (m *mapping) duration(key string, dst *time.Duration) bool {
	return get(m, key, parseDuration, dst)
}

// count decodes a uint32 that must be at least min.
func (m *mapping) count(key string, dst *uint32, min int) bool {
	var n int
	if !m.integer(key, &n) {
		return false
	}
	switch {
	case n < min:
		m.errorf(key, "must be >= %d", min)
		return false
	case n > math.MaxUint32:
		m.errorf(key, "must be <= %d", uint32(math.MaxUint32))
		return false
	}
	*dst = uint32(n)
	return true
}

// nonNegative decodes an int that must be >= 0.
func (m *mapping) nonNegative(key string, dst *int) {
	if m.integer(key, dst) && *dst < 0 {
		m.errorf(key, "must be >= 0")
	}
}

// enum decodes a string that must be one of allowed.
func (m *mapping) enum(key string, dst *string, allowed ...string) bool {
	var s string
	if !m.str(key, &s) {
		return false
	}
	for _, a := range allowed {
		if s == a {
			*dst = s
			return true
		}
	}
	m.errorf(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), s)
	return false
}

// list returns the items of the list under key (aliases resolved); ok is
// false when key is absent or null, or is not a list.
func (m *mapping) list(key string) (items []*yaml.Node, ok bool) {
	v := m.value(key)
	if v == nil {
		return nil, false
	}
	if v.Kind != yaml.SequenceNode {
		m.errorf(key, "must be a list, not %s", kindName(v))
		return nil, false
	}
	items = make([]*yaml.Node, len(v.Content))
	for i, it := range v.Content {
		items[i] = resolve(it)
	}
	return items, true
}

// emptyHint explains an empty value that came from ${...} references, which
// is nearly always an unset environment variable. It quotes the raw text,
// which is safe: a value that expanded to "" holds no literal text.
func (m *mapping) emptyHint(key string) string {
	if v := resolve(m.vals[key]); v != nil && strings.Contains(v.Value, "${") {
		return fmt.Sprintf(" (%s expanded to \"\"; is the variable set?)", v.Value)
	}
	return ""
}

// secret decodes a secret given inline under key or read from the file named
// under fileKey. With required, a missing or empty secret is an error; an
// empty file always is. Errors never contain the secret.
func (m *mapping) secret(key, fileKey string, dst *string, required bool) {
	m.used[key], m.used[fileKey] = true, true
	switch inline, file := m.has(key), m.has(fileKey); {
	case inline && file:
		m.errorf(fileKey, "set either %s or %s, not both", key, fileKey)
	case file:
		var path string
		if !m.str(fileKey, &path) {
			return
		}
		if path == "" {
			m.errorf(fileKey, "must not be empty%s", m.emptyHint(fileKey))
			return
		}
		s, err := readSecretFile(m.d.baseDir, path)
		if err != nil {
			m.errorf(fileKey, "%v", err)
			return
		}
		*dst = s
	case inline:
		if m.str(key, dst) && *dst == "" && required {
			m.errorf(key, "must not be empty%s", m.emptyHint(key))
		}
	case required:
		m.errorf(key, "required (or %s)", fileKey)
	}
}

// maxSecretFile bounds what readSecretFile reads: a secret is short, and a
// wrong path (a log, a device) should fail rather than fill memory.
const maxSecretFile = 64 << 10

// readSecretFile returns the content of the file at path (relative to
// baseDir), without trailing whitespace. Errors name the file, never its
// content.
func readSecretFile(baseDir, path string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	fail := func(err error) (string, error) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("cannot read %q: %v", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return fail(err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("file %q is larger than 64KiB; is it the right file?", path)
	}
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return "", fmt.Errorf("file %q is empty", path)
	}
	return s, nil
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

func parseString(s string) (string, error) { return s, nil }

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
