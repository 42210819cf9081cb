package platform

import (
	"context"
	"strings"
	"testing"
	"time"
)

// An imported merchant's appid becomes a route (/{p}@{appid}/, where it
// ends at "/" and "." ends a placeholder's name), a store key and a log
// field, and the record is kept even when its check fetch fails. Only an
// appid's characters are accepted; anything else changes nothing.
func TestImportRefusesJunkAppIDs(t *testing.T) {
	p := newTestPlatform(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	for _, appid := range []string{"wx.merchant", "wx/../x", "wx@x", "wx x", "<script>", "wx\nx", "wx{x}", strings.Repeat("a", 65), ""} {
		if _, err := p.Import(ctx, appid, "refreshtoken@@@0123456789"); err == nil {
			t.Errorf("Import(%q) accepted", appid)
		}
		if p.lookup(appid) != nil {
			t.Errorf("Import(%q) added a merchant", appid)
		}
		if _, err := p.store.Record(ctx, p.name, appid); err == nil {
			t.Errorf("Import(%q) stored a record", appid)
		}
	}
	if _, err := p.Import(ctx, "wxmerchant0000000a", "refreshtoken@@@0123456789"); p.lookup("wxmerchant0000000a") == nil {
		t.Errorf("a real appid was not kept: %v", err)
	}
}
