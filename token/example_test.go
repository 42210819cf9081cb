package token_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wxproxy/wxproxy/token"
)

// A Cache over any Source: here a stand-in for WeChat's token endpoint.
// In production the Source is a *token.HTTPFetcher and Run keeps the token
// fresh in the background.
func ExampleCache() {
	n := 0
	src := token.SourceFunc(func(ctx context.Context, force bool) (token.Token, error) {
		n++
		now := time.Now()
		return token.Token{Value: fmt.Sprintf("tok-%d", n), ObtainedAt: now, ExpiresAt: now.Add(2 * time.Hour)}, nil
	})
	c, err := token.New(token.Options{App: "main", Mode: token.Classic, Fetcher: src})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	tok, _ := c.Get(ctx) // the first caller fetches
	fmt.Println(tok.Value, c.Current().Value)

	// WeChat rejected tok-1: every caller that saw it shares one refresh,
	// and a caller that saw it late gets the new token without another.
	tok, _ = c.Invalidate(ctx, "tok-1")
	again, _ := c.Invalidate(ctx, "tok-1")
	fmt.Println(tok.Value, again.Value, c.Refreshes())
	// Output:
	// tok-1 tok-1
	// tok-2 tok-2 2
}

// Tickets hold an account's tickets: a Cache per type, each over its own
// Source. In production the Source is a *token.TicketSource that fetches
// with the account's access token Cache, and Run keeps them fresh.
func ExampleTickets() {
	kind := token.TicketKind()
	tickets, err := token.NewTickets(token.TicketTypes(false), []token.TicketType{token.TicketJSAPI},
		func(typ token.TicketType) (*token.Cache, error) {
			return token.New(token.Options{App: "main", Kind: &kind, Key: "ticket:" + string(typ) + ":wx1",
				Fetcher: token.SourceFunc(func(context.Context, bool) (token.Token, error) {
					now := time.Now()
					return token.Token{Value: string(typ) + "-ticket", ObtainedAt: now, ExpiresAt: now.Add(2 * time.Hour)}, nil
				})})
		})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	jsapi, _ := tickets.Get(ctx, token.TicketJSAPI)
	card, _ := tickets.Get(ctx, token.TicketWxCard) // not configured: held from now on
	_, err = tickets.Get(ctx, token.TicketAgentConfig)
	fmt.Println(jsapi.Value, card.Value, errors.Is(err, token.ErrUnknownTicketType))
	for _, st := range tickets.Statuses() {
		fmt.Println(st.Type, st.Held)
	}
	// Output:
	// jsapi-ticket wx_card-ticket true
	// jsapi true
	// wx_card false
}
