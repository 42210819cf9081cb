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
	attrs []slog.Attr // from WithAttrs, scrubbed with each record: the scrubber may come later
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
	if len(h.attrs) > 0 {
		all := append(append([]slog.Attr{}, h.attrs...), recordAttrs(r)...)
		r = slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.AddAttrs(all...)
	}
	if f == nil || clean(r, *f) {
		return h.next.Handle(ctx, r) // the common case: nothing to replace, nothing copied
	}
	out := slog.NewRecord(r.Time, r.Level, (*f)(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(scrubAttr(a, *f))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler. The attributes are kept here and
// scrubbed with every record, so a scrubber set later still applies.
func (h *ScrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &ScrubHandler{next: h.next, scrub: h.scrub, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

// WithGroup implements slog.Handler. Attributes kept so far belong outside
// the group, so they are handed to the next handler first, scrubbed with
// the scrubber in force (if none is set yet, as they are).
func (h *ScrubHandler) WithGroup(name string) slog.Handler {
	next := h.next
	if len(h.attrs) > 0 {
		as := h.attrs
		if f := h.scrub.Load(); f != nil {
			as = make([]slog.Attr, len(h.attrs))
			for i, a := range h.attrs {
				as[i] = scrubAttr(a, *f)
			}
		}
		next = next.WithAttrs(as)
	}
	return &ScrubHandler{next: next.WithGroup(name), scrub: h.scrub}
}

func recordAttrs(r slog.Record) []slog.Attr {
	as := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		as = append(as, a)
		return true
	})
	return as
}

// clean reports whether r holds nothing f would change.
func clean(r slog.Record, f func(string) string) bool {
	if f(r.Message) != r.Message {
		return false
	}
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		ok = cleanAttr(a, f)
		return ok
	})
	return ok
}

func cleanAttr(a slog.Attr, f func(string) string) bool {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		s := v.String()
		return f(s) == s
	case slog.KindGroup:
		for _, ga := range v.Group() {
			if !cleanAttr(ga, f) {
				return false
			}
		}
		return true
	case slog.KindAny:
		return false // formatted by the next handler: always scrubbed
	}
	return true
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
