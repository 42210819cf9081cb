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
	Name string   // for logs and metrics
	Key  string   // the X-WXProxy-Key value; "" = none (CertCN only)
	Apps []string // apps it may use; empty = all
	// APIs are the path globs of the APIs it may call ("*" within one
	// segment, a "**" segment for any depth), matched ASCII
	// case-insensitively against the cleaned path without the app prefix;
	// nil = all. Token endpoints count as APIs. An invalid glob matches
	// nothing.
	APIs []string
	// CertCN, if set, is the subject common name of a verified client
	// certificate that identifies this caller without X-WXProxy-Key.
	CertCN  string
	Limiter Quotas // per-caller limit, consulted with the API path; nil = none

	globs []apiGlob // APIs compiled by SetAccess
}

// access is Access compiled for lookups. Keys are indexed by their SHA-256,
// so the lookup takes the same time whatever the key (no byte-by-byte
// comparison of secrets).
type access struct {
	cidrs    []netip.Prefix
	required bool // keys are in use: every caller must be one
	keys     map[[32]byte]*CallerKey
	cns      map[string]*CallerKey // by client certificate CN; nil = none
}

func compileAccess(a Access) *access {
	c := &access{cidrs: a.AllowCIDRs, required: len(a.Keys) > 0}
	if len(a.Keys) > 0 {
		c.keys = make(map[[32]byte]*CallerKey, len(a.Keys))
		for i := range a.Keys {
			k := a.Keys[i] // a copy: the caller's Access is not changed
			if k.APIs != nil {
				k.globs = make([]apiGlob, 0, len(k.APIs))
				for _, g := range k.APIs {
					if cg, err := compileAPIGlob(g); err == nil {
						k.globs = append(k.globs, cg)
					}
				}
			}
			if k.Key != "" {
				c.keys[sha256.Sum256([]byte(k.Key))] = &k
			}
			if k.CertCN != "" {
				if c.cns == nil {
					c.cns = map[string]*CallerKey{}
				}
				c.cns[k.CertCN] = &k
			}
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
	if !a.required {
		return nil, nil
	}
	k := ctx.Request.Header.Peek(headerKey)
	if len(k) == 0 {
		if ck := a.byCert(ctx); ck != nil {
			return ck, nil
		}
		return nil, &Error{Kind: KindForbidden, Msg: "send your caller key in the X-WXProxy-Key header"}
	}
	ck := a.keys[sha256.Sum256(k)]
	if ck == nil {
		return nil, &Error{Kind: KindForbidden, Msg: "unknown X-WXProxy-Key"}
	}
	return ck, nil
}

// byCert finds the key named by the verified client certificate of a TLS
// connection, if any.
func (a *access) byCert(ctx *fasthttp.RequestCtx) *CallerKey {
	if a.cns == nil || !ctx.IsTLS() {
		return nil
	}
	st := ctx.TLSConnectionState()
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return a.cns[st.VerifiedChains[0][0].Subject.CommonName]
}

// mayCall reports whether the key may call the API api (a classification
// key: cleaned, lower-case, no trailing "/").
func (k *CallerKey) mayCall(api string) bool {
	if k == nil || k.APIs == nil {
		return true
	}
	for _, g := range k.globs {
		if g.match(api) {
			return true
		}
	}
	return false
}

func (k *CallerKey) mayUse(app string) bool {
	return k == nil || len(k.Apps) == 0 || slices.Contains(k.Apps, app)
}

// mayUseApp reports whether the key may use app: listed by name, or for a
// merchant of a platform ({platform}@{appid}) or a corp of a suite, by its
// platform's name, which stands for the component and all its merchants.
func (k *CallerKey) mayUseApp(app *App) bool {
	if k.mayUse(app.Name) {
		return true
	}
	return (app.Kind == KindAuthorizer || app.Kind == KindCorp) && app.plat != nil && slices.Contains(k.Apps, app.plat.cfg.Name)
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
