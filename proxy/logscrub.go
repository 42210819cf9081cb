package proxy

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// ScrubHandler is a slog.Handler that passes every message and every
// string value (also inside groups and in attributes added with
// WithAttrs) through a scrubber before the next handler writes it. It is
// the one choke point that keeps a credential out of the log whatever a
// library quotes in an error (fasthttp quotes header values and request
// targets; WeChat's errmsg is free text). Until SetScrubber is called it
// passes records unchanged. It is safe for concurrent use.
type ScrubHandler struct {
	next  slog.Handler
	scrub *atomic.Pointer[func(string) string]
}

// NewScrubHandler returns a handler that scrubs records for next.
func NewScrubHandler(next slog.Handler) *ScrubHandler {
	return &ScrubHandler{next: next, scrub: new(atomic.Pointer[func(string) string])}
}

// SetScrubber sets the function that cleans text, e.g. (*Proxy).Scrub; it
// applies to every handler derived from h.
func (h *ScrubHandler) SetScrubber(f func(string) string) { h.scrub.Store(&f) }

// Enabled implements slog.Handler.
func (h *ScrubHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *ScrubHandler) Handle(ctx context.Context, r slog.Record) error {
	f := h.scrub.Load()
	if f == nil {
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, (*f)(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(scrubAttr(a, *f))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler.
func (h *ScrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if f := h.scrub.Load(); f != nil {
		clean := make([]slog.Attr, len(as))
		for i, a := range as {
			clean[i] = scrubAttr(a, *f)
		}
		as = clean
	}
	return &ScrubHandler{next: h.next.WithAttrs(as), scrub: h.scrub}
}

// WithGroup implements slog.Handler.
func (h *ScrubHandler) WithGroup(name string) slog.Handler {
	return &ScrubHandler{next: h.next.WithGroup(name), scrub: h.scrub}
}

func scrubAttr(a slog.Attr, f func(string) string) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, f(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = scrubAttr(ga, f)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, f(err.Error()))
		}
		return slog.String(a.Key, f(v.String()))
	}
	return slog.Attr{Key: a.Key, Value: v}
}
