package proxy

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"slices"

	"github.com/valyala/fasthttp"
)

// Access says who may use the caller port. The zero Access allows
// everyone; Proxy.SetAccess replaces it on reload.
type Access struct {
	// AllowCIDRs lists the networks callers may connect from; empty = any.
	AllowCIDRs []netip.Prefix
	// Keys, when not empty, makes X-WXProxy-Key mandatory.
	Keys []CallerKey
}

// CallerKey is one caller credential.
type CallerKey struct {
	Name    string   // for logs and metrics
	Key     string   // the X-WXProxy-Key value
	Apps    []string // apps it may use; empty = all
	Limiter Quotas   // per-caller limit, consulted with the API path; nil = none
}

// access is Access compiled for lookups. Keys are indexed by their SHA-256,
// so the lookup takes the same time whatever the key (no byte-by-byte
// comparison of secrets).
type access struct {
	cidrs []netip.Prefix
	keys  map[[32]byte]*CallerKey
}

func compileAccess(a Access) *access {
	c := &access{cidrs: a.AllowCIDRs}
	if len(a.Keys) > 0 {
		c.keys = make(map[[32]byte]*CallerKey, len(a.Keys))
		for i := range a.Keys {
			c.keys[sha256.Sum256([]byte(a.Keys[i].Key))] = &a.Keys[i]
		}
	}
	return c
}

// SetAccess replaces the caller rules; requests already admitted are not
// affected.
func (p *Proxy) SetAccess(a Access) { p.access.Store(compileAccess(a)) }

// admit checks the caller's address and key; it returns the caller's key
// (nil when keys are not in use).
func (a *access) admit(ctx *fasthttp.RequestCtx) (*CallerKey, error) {
	if len(a.cidrs) > 0 {
		ip := remoteIP(ctx)
		if !ip.IsValid() || !slices.ContainsFunc(a.cidrs, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return nil, &Error{Kind: KindForbidden, Msg: "caller address is not in callers.allow_cidrs"}
		}
	}
	if a.keys == nil {
		return nil, nil
	}
	k := ctx.Request.Header.Peek(headerKey)
	if len(k) == 0 {
		return nil, &Error{Kind: KindForbidden, Msg: "send your caller key in the X-WXProxy-Key header"}
	}
	ck := a.keys[sha256.Sum256(k)]
	if ck == nil {
		return nil, &Error{Kind: KindForbidden, Msg: "unknown X-WXProxy-Key"}
	}
	return ck, nil
}

func (k *CallerKey) mayUse(app string) bool {
	return k == nil || len(k.Apps) == 0 || slices.Contains(k.Apps, app)
}

func remoteIP(ctx *fasthttp.RequestCtx) netip.Addr {
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
		return netip.Addr{}
	}
	ip, err := netip.ParseAddrPort(ctx.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ip.Addr().Unmap()
}
