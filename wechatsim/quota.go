package wechatsim

import (
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// shanghaiOffset is Asia/Shanghai's UTC offset; China has had no daylight
// saving time since 1991, so a fixed offset is exact for any simulated date
// after that and needs no tzdata.
const shanghaiOffset = 8 * 60 * 60

// shanghaiDay numbers the Asia/Shanghai calendar day holding the instant now
// (unix nanoseconds); WeChat's daily quotas reset when it changes.
func shanghaiDay(now int64) int64 {
	return floorDiv(floorDiv(now, int64(time.Second))+shanghaiOffset, 24*60*60)
}

// shanghaiMonth numbers the Asia/Shanghai calendar month holding now.
func shanghaiMonth(now int64) int64 {
	t := time.Unix(floorDiv(now, int64(time.Second))+shanghaiOffset, 0).UTC()
	return int64(t.Year())*12 + int64(t.Month())
}

// minuteOf numbers the clock minute holding now.
func minuteOf(now int64) int64 { return floorDiv(now, int64(time.Minute)) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// counter counts one app's calls to one path in the current minute and day.
type counter struct {
	mu     sync.Mutex
	minute int64
	perMin int
	day    int64
	perDay int
}

// take counts a call at now against q unless a limit is reached, in which
// case it answers 45009 (daily, checked first) or 45011 and counts nothing.
func (c *counter) take(q Quota, now int64) int {
	m, d := minuteOf(now), shanghaiDay(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.minute != m {
		c.minute, c.perMin = m, 0
	}
	if c.day != d {
		c.day, c.perDay = d, 0
	}
	switch {
	case q.PerDay > 0 && c.perDay >= q.PerDay:
		return wechat.CodeDailyQuota
	case q.PerMinute > 0 && c.perMin >= q.PerMinute:
		return wechat.CodeMinuteQuota
	}
	c.perMin++
	c.perDay++
	return 0
}

// used returns the calls counted in the minute and the day holding now.
func (c *counter) used(now int64) (minute, day int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.minute == minuteOf(now) {
		minute = c.perMin
	}
	if c.day == shanghaiDay(now) {
		day = c.perDay
	}
	return minute, day
}

func (c *counter) reset() {
	c.mu.Lock()
	c.perMin, c.perDay = 0, 0
	c.mu.Unlock()
}

// counterSet holds one app's counters, created on first use per path.
type counterSet struct {
	mu sync.RWMutex
	m  map[string]*counter
}

func newCounterSet() *counterSet { return &counterSet{m: make(map[string]*counter)} }

func (cs *counterSet) get(path string) *counter {
	cs.mu.RLock()
	c := cs.m[path]
	cs.mu.RUnlock()
	if c != nil {
		return c
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c = cs.m[path]; c == nil {
		c = new(counter)
		cs.m[path] = c
	}
	return c
}

func (cs *counterSet) reset() {
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	for _, c := range cs.m {
		c.reset()
	}
}

// takeQuota counts a call of a to path against the configured quota, if any;
// it answers 0, 45009 or 45011.
func (s *Server) takeQuota(a *appState, path string, now int64) int {
	q, ok := s.quotas[path]
	if !ok || (q.PerMinute == 0 && q.PerDay == 0) {
		return 0
	}
	return a.counters.get(path).take(q, now)
}
