package suite_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/wxproxy/wxproxy/suite"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// FuzzPush: whatever arrives on the callback URL, HandlePush and
// VerifyURL never panic; a push not signed with the suite's token is
// refused and leaves no ticket.
func FuzzPush(f *testing.F) {
	crypt, err := wxcrypt.New(wxcrypt.Options{Token: wcToken, AESKey: wcKey})
	if err != nil {
		f.Fatal(err)
	}
	good := func(msg string) []byte {
		body, _, _ := crypt.Seal([]byte(msg), suiteID, "1", "2")
		return body
	}
	f.Add("1", "2", "00", []byte("<xml><Encrypt>AAAA</Encrypt></xml>"))
	f.Add("1", "2", "", good("<xml><SuiteId>"+suiteID+"</SuiteId><InfoType>suite_ticket</InfoType><SuiteTicket>t</SuiteTicket></xml>"))
	f.Add("1", "2", "", good("<xml><InfoType>create_auth</InfoType><AuthCode></AuthCode></xml>"))
	f.Add("1", "2", "", good("not xml"))
	f.Add("", "", "", []byte(""))
	f.Fuzz(func(t *testing.T, ts, nonce, sig string, body []byte) {
		// No upstream is reachable: a fuzzed push can never get as far as
		// an exchange (that needs a valid signature).
		s, err := suite.New(suite.Options{Name: "suiteco", SuiteID: suiteID, Secret: "suitesecret", ProviderCorpID: providerCorp,
			Crypter: crypt, Upstream: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "msg_signature": {sig}, "echostr": {string(body)}}
		_, _ = s.VerifyURL(context.Background(), q)
		err = s.HandlePush(context.Background(), q, body)
		if sig == "" && err == nil {
			t.Errorf("a push without a signature was applied")
		}
		if sig == "" && s.Ticket() != nil {
			t.Errorf("an unsigned push left a ticket")
		}
	})
}
