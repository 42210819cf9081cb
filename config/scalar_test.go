package config

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1048576", 1 << 20},
		{"1_000", 1000},
		{"5B", 5},
		{"1KB", 1000},
		{"10MB", 10_000_000},
		{"2GB", 2_000_000_000},
		{"512KiB", 512 << 10},
		{"10MiB", 10 << 20},
		{"1GiB", 1 << 30},
		{"10 MiB", 10 << 20},
		{"10mib", 10 << 20},
		{"-1KiB", -1024}, // parses; the key's range check rejects it
	}
	for _, tt := range tests {
		if got, err := parseSize(tt.in); err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "abc", "MiB", "10XB", "1.5MiB", "10 M", "1e6", "10MiBs", "99999999999GiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, nil; want an error", in, got)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1536, "1536"},
		{1000, "1000"},
		{2048, "2KiB"},
		{10 << 20, "10MiB"},
		{3 << 30, "3GiB"},
		{1<<30 + 1<<20, "1025MiB"},
	}
	for _, tt := range tests {
		got := formatSize(tt.in)
		if got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := parseSize(got); err != nil || back != tt.in {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"15s", 15 * time.Second},
		{"10m", 10 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"250ms", 250 * time.Millisecond},
		{"0", 0},
		{"-1s", -time.Second}, // parses; the key's range check rejects it
	}
	for _, tt := range tests {
		if got, err := parseDuration(tt.in); err != nil || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
		}
	}
	errs := []struct{ in, want string }{
		{"abc", `invalid duration "abc"`},
		{"", `invalid duration ""`},
		{"10", `invalid duration "10" (missing unit, e.g. "10s")`},
		{"1d", `invalid duration "1d"`},
	}
	for _, tt := range errs {
		if _, err := parseDuration(tt.in); errText(err) != tt.want {
			t.Errorf("parseDuration(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{15 * time.Second, "15s"},
		{10 * time.Minute, "10m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h0m1s"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tt := range tests {
		got := formatDuration(tt.in)
		if got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := parseDuration(got); err != nil || back != tt.in {
			t.Errorf("parseDuration(formatDuration(%v)) = %v, %v", tt.in, back, err)
		}
	}
}

func TestScalarsInConfig(t *testing.T) {
	c := mustParse(t, `
shutdown_timeout: 1h30m
upstream_timeout: 2500ms
max_body_bytes: 1GB
retry_body_bytes: 10 MiB
`, nil)
	tests := []struct {
		name      string
		got, want any
	}{
		{"shutdown_timeout", c.ShutdownTimeout, 90 * time.Minute},
		{"upstream_timeout", c.UpstreamTimeout, 2500 * time.Millisecond},
		{"max_body_bytes", c.MaxBodyBytes, int64(1e9)},
		{"retry_body_bytes", c.RetryBodyBytes, int64(10 << 20)},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
