package wechatsim

import (
	"errors"
	"testing"
	"time"
)

// TestSuiteBounds hits the bounds on corps per suite and on outstanding
// auth codes, lowered so the test stays fast; a refused call changes
// nothing.
func TestSuiteBounds(t *testing.T) {
	start := time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)
	s, err := New(Options{Suites: []Suite{{SuiteID: "wwsuite", Secret: "s", Token: "t", AESKey: "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"}},
		Now: func() time.Time { return start }})
	if err != nil {
		t.Fatal(err)
	}
	s.maxSuiteCorps, s.maxAuthCodes = 2, 3
	// No callback: every push fails, but installs and codes are made first.
	for _, corp := range []string{"wwa", "wwb"} {
		if _, err := s.Install("wwsuite", corp); err == nil || errors.Is(err, errTooMany) {
			t.Fatalf("install %s: %v, want only the push to fail", corp, err)
		}
	}
	if _, err := s.Install("wwsuite", "wwc"); !errors.Is(err, errTooMany) {
		t.Fatalf("third corp: %v, want errTooMany", err)
	}
	su := s.st.Load().suite("wwsuite")
	if n := len(su.suite.corps); n != 2 {
		t.Errorf("%d corps after the refused install, want 2", n)
	}
	if _, err := s.ResetPermanentCode("wwsuite", "wwa"); errors.Is(err, errTooMany) {
		t.Fatalf("third code: %v", err)
	}
	if _, err := s.ResetPermanentCode("wwsuite", "wwa"); !errors.Is(err, errTooMany) {
		t.Fatalf("fourth outstanding code: %v, want errTooMany", err)
	}
	if _, err := s.Install("wwsuite", "wwb"); !errors.Is(err, ErrInstalled) {
		t.Fatalf("installed corp: %v, want ErrInstalled", err)
	}
	if _, err := s.Uninstall("wwsuite", "wwb"); err == nil {
		t.Fatal("uninstall without a callback: want the push error")
	}
	if _, err := s.Install("wwsuite", "wwb"); !errors.Is(err, errTooMany) {
		t.Fatalf("reinstall with codes full: %v, want errTooMany", err)
	}
	if p := su.permanentOf("wwb"); p != "" {
		t.Errorf("the refused reinstall gave a permanent code")
	}
	// Expired codes make room again.
	if err := s.Advance(suiteAuthCodeTTL); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetPermanentCode("wwsuite", "wwa"); errors.Is(err, errTooMany) {
		t.Fatalf("after the codes expired: %v", err)
	}
	if n := len(su.suite.codes); n != 1 {
		t.Errorf("%d codes kept, want only the new one", n)
	}
}

// permanentOf returns the permanent code of the suite's corp corpid.
func (a *appState) permanentOf(corpid string) string {
	a.mu.Lock()
	c := a.suite.corps[corpid]
	a.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.corp.permanent
}
