package platform

import (
	"context"
	"fmt"
	"strings"

	"github.com/wxproxy/wxproxy/token"
)

// merchantTicketTypes are the tickets a merchant may hold (SPEC §12: its
// jsapi tickets, held on demand as an app's are, §11). Their index is the
// merchant's slot of the type.
var merchantTicketTypes = [...]token.TicketType{token.TicketJSAPI, token.TicketWxCard}

// TicketKey is the store key of a merchant's ticket of typ.
func TicketKey(platform string, typ token.TicketType, appid string) string {
	return "platform:" + platform + ":ticket:" + string(typ) + ":" + appid
}

// parseTicketKey returns the type and appid of a TicketKey of platform.
func parseTicketKey(platform, key string) (token.TicketType, string, bool) {
	rest, ok := strings.CutPrefix(key, "platform:"+platform+":ticket:")
	if !ok {
		return "", "", false
	}
	typ, appid, ok := strings.Cut(rest, ":")
	return token.TicketType(typ), appid, ok
}

// MerchantTickets is a merchant's tickets (jsapi, wx_card): each is
// fetched with the merchant's authorizer token on first demand and held
// from then on, kept fresh by the platform's scheduler while the merchant
// is used, like its token. It is the Merchant itself, seen as the proxy's
// ticket holder.
type MerchantTickets Merchant

// Tickets returns the merchant's ticket holder.
func (m *Merchant) Tickets() *MerchantTickets { return (*MerchantTickets)(m) }

// Get returns a valid ticket of typ, fetching it on first demand. A type
// a merchant does not have wraps token.ErrUnknownTicketType; a merchant
// that must authorize again gets an error wrapping WeChat's 61023.
func (mt *MerchantTickets) Get(ctx context.Context, typ token.TicketType) (*token.Token, error) {
	m := (*Merchant)(mt)
	c, err := m.ticket(typ)
	if err != nil {
		return nil, err
	}
	m.touch()
	if m.unauthorized.Load() {
		return nil, errUnauthorized(m.appid)
	}
	return c.Get(ctx)
}

// Statuses returns a snapshot of the tickets held (none is held from the
// start: all are held on demand).
func (mt *MerchantTickets) Statuses() []token.TicketStatus {
	var out []token.TicketStatus
	for i, typ := range merchantTicketTypes {
		if c := mt.tickets[i].Load(); c != nil {
			out = append(out, token.TicketStatus{Type: typ, Status: c.Status()})
		}
	}
	return out
}

// ticket returns the holder of the merchant's ticket of typ, making it on
// first demand. It does no I/O.
func (m *Merchant) ticket(typ token.TicketType) (*token.Cache, error) {
	i := -1
	for j, t := range merchantTicketTypes {
		if t == typ {
			i = j
		}
	}
	if i < 0 {
		return nil, fmt.Errorf("%w %q (a merchant holds jsapi and wx_card tickets)", token.ErrUnknownTicketType, typ)
	}
	if c := m.tickets[i].Load(); c != nil {
		return c, nil
	}
	p := m.p
	key := TicketKey(p.name, typ, m.appid)
	// Options are valid by construction: New cannot fail.
	c, _ := token.New(token.Options{
		App:  MerchantKey(p.name, m.appid),
		Kind: &p.ticketKind,
		Fetcher: &token.TicketSource{Type: typ, Upstream: p.upstream, Tokens: m, Client: p.client,
			Now: p.now},
		Store:         p.opts.Tokens,
		Key:           key,
		RefreshBefore: p.opts.RefreshBefore,
		FetchTimeout:  3 * p.opts.FetchTimeout, // the component and authorizer tokens may be fetched first
		LockTTL:       p.opts.LockTTL,
		MinBackoff:    p.opts.MinBackoff,
		Location:      p.loc,
		Now:           p.now,
		Logger:        p.opts.Logger,
		OnRefresh:     p.onTicketRefresh,
		OnStoreError:  p.opts.OnStoreError,
	})
	if !m.tickets[i].CompareAndSwap(nil, c) {
		return m.tickets[i].Load(), nil // another caller made it first
	}
	return c, nil
}

// heldTicket returns the holder of the ticket of typ if the merchant
// holds one; nil otherwise.
func (m *Merchant) heldTicket(typ token.TicketType) *token.Cache {
	for i, t := range merchantTicketTypes {
		if t == typ {
			return m.tickets[i].Load()
		}
	}
	return nil
}

// dueTickets reports whether one of the merchant's tickets has background
// work now.
func (m *Merchant) dueTickets() bool {
	for i := range m.tickets {
		if c := m.tickets[i].Load(); c != nil && c.Due() {
			return true
		}
	}
	return false
}

// step does the background work of the merchant's token and tickets that
// is due.
func (m *Merchant) step(ctx context.Context) {
	m.cache.Step(ctx)
	for i := range m.tickets {
		if c := m.tickets[i].Load(); c != nil {
			c.Step(ctx)
		}
	}
}
