package proxy

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

// Metrics are wxproxy's Prometheus metrics (SPEC §8), on a registry the
// caller owns. Labels stay low-cardinality: api is a configured or
// well-known path, else "other"; errcodes beyond the first maxCodes seen
// are "other". Metrics is safe for concurrent use.
type Metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	upstream     *prometheus.HistogramVec
	refreshes    *prometheus.CounterVec
	tickets      *prometheus.CounterVec
	retries      *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	wechatErrors *prometheus.CounterVec
	storeErrors  *prometheus.CounterVec
	scrubbed     *prometheus.CounterVec
	failovers    *prometheus.CounterVec

	reqCache, durCache, upCache sync.Map // label set → child metric

	mu    sync.RWMutex
	apis  map[string]bool // label-worthy API paths
	codes map[int]string  // errcode labels seen
}

const maxCodes = 200

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_requests_total",
			Help: "Caller requests by app, API, HTTP status and outcome."}, []string{"app", "api", "code", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wxproxy_request_duration_seconds",
			Help: "Time to answer a caller, retries included.", Buckets: buckets}, []string{"app"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wxproxy_upstream_duration_seconds",
			Help: "Time of one round trip to WeChat, to the answer's headers.", Buckets: buckets}, []string{"app"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_token_refreshes_total",
			Help: "Token fetches by reason (startup, proactive, invalid, manual) and result (ok, error)."}, []string{"app", "reason", "result"}),
		tickets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_ticket_refreshes_total",
			Help: "Ticket fetches by type, reason (startup, proactive, invalid, manual) and result (ok, error)."}, []string{"app", "type", "reason", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_token_retries_total",
			Help: "Requests replayed after WeChat rejected the token, by the rejecting errcode."}, []string{"app", "errcode"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_ratelimit_rejections_total",
			Help: "Requests refused by a local limit, by scope (api, caller, upstream, token)."}, []string{"app", "api", "scope"}),
		wechatErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_wechat_errors_total",
			Help: "Non-zero errcodes answered by WeChat."}, []string{"app", "api", "errcode"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_store_errors_total",
			Help: "Failed store operations (token store, quota store)."}, []string{"op"}),
		scrubbed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_scrubbed_total",
			Help: "Answers in which a held credential was replaced before reaching the caller."}, []string{"app"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_failovers_total",
			Help: "Requests and token fetches sent to upstream `to` because `from` was down or could not be reached."}, []string{"app", "from", "to"}),
		apis:  make(map[string]bool),
		codes: make(map[int]string),
	}
	reg.MustRegister(m.requests, m.duration, m.upstream, m.refreshes, m.tickets, m.retries, m.rejections, m.wechatErrors, m.storeErrors, m.scrubbed, m.failovers)
	for _, api := range wechat.WellKnownAPIs {
		m.apis[api] = true
	}
	return m
}

// SetAPIs adds configured API paths to the label-worthy set.
func (m *Metrics) SetAPIs(apis []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range apis {
		m.apis[apiKey(a)] = true
	}
}

func (m *Metrics) api(path string) string {
	m.mu.RLock()
	ok := m.apis[path]
	m.mu.RUnlock()
	if ok {
		return path
	}
	return "other"
}

func (m *Metrics) code(c int) string {
	m.mu.RLock()
	s, ok := m.codes[c]
	m.mu.RUnlock()
	if ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok = m.codes[c]; !ok {
		if len(m.codes) >= maxCodes {
			return "other" // not remembered: the map stays bounded
		}
		s = strconv.Itoa(c)
		m.codes[c] = s
	}
	return s
}

// TokenRefreshed counts one token fetch; wire it to token.Options.OnRefresh.
func (m *Metrics) TokenRefreshed(app string, reason token.Reason, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.refreshes.WithLabelValues(app, string(reason), result).Inc()
}

// TicketRefreshed counts one ticket fetch; wire it to the ticket Cache's
// token.Options.OnRefresh. Types are the few of token.TicketTypes.
func (m *Metrics) TicketRefreshed(app string, typ token.TicketType, reason token.Reason, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.tickets.WithLabelValues(app, string(typ), string(reason), result).Inc()
}

// StoreError counts one failed store operation.
func (m *Metrics) StoreError(op string) { m.storeErrors.WithLabelValues(op).Inc() }

// requestKey is one label set of wxproxy_requests_total; the set of them
// is bounded (apps × label-worthy APIs × statuses × outcomes).
type requestKey struct {
	app, api string
	status   int
	outcome  string
}

// observeRequest counts a request. The children of label sets already
// seen are cached, so the hot path skips the label hashing.
func (m *Metrics) observeRequest(app, path string, status int, outcome string, d time.Duration) {
	app = appLabel(app)
	k := requestKey{app, m.api(path), status, outcome}
	c, ok := m.reqCache.Load(k)
	if !ok {
		c, _ = m.reqCache.LoadOrStore(k, m.requests.WithLabelValues(app, k.api, strconv.Itoa(status), outcome))
	}
	c.(prometheus.Counter).Inc()
	m.appObserver(&m.durCache, m.duration, app).Observe(d.Seconds())
}

func (m *Metrics) observeUpstream(app string, d time.Duration) {
	app = appLabel(app)
	m.appObserver(&m.upCache, m.upstream, app).Observe(d.Seconds())
}

// appObserver returns the cached child of a histogram labelled by app.
func (m *Metrics) appObserver(cache *sync.Map, h *prometheus.HistogramVec, app string) prometheus.Observer {
	if o, ok := cache.Load(app); ok {
		return o.(prometheus.Observer)
	}
	o, _ := cache.LoadOrStore(app, h.WithLabelValues(app))
	return o.(prometheus.Observer)
}

func (m *Metrics) observeErrcode(app, path string, code int) {
	app = appLabel(app)
	m.wechatErrors.WithLabelValues(app, m.api(path), m.code(code)).Inc()
}

func (m *Metrics) observeRetry(app string, code int) {
	app = appLabel(app)
	m.retries.WithLabelValues(app, m.code(code)).Inc()
}

func (m *Metrics) observeScrubbed(app string) { m.scrubbed.WithLabelValues(appLabel(app)).Inc() }

// appLabel is the metric label of an app name: a merchant of a platform
// ("acme@wx...") counts under its platform, so labels stay few however
// many merchants there are.
func appLabel(name string) string {
	if i := strings.IndexByte(name, '@'); i >= 0 {
		return name[:i]
	}
	return name
}

// Failover counts a request or fetch of app sent to upstream to because
// upstream from was down or could not be reached. Both are configured
// upstream URLs, so the labels stay few.
func (m *Metrics) Failover(app, from, to string) { m.failovers.WithLabelValues(app, from, to).Inc() }

func (m *Metrics) observeRejection(app, path, scope string) {
	app = appLabel(app)
	m.rejections.WithLabelValues(app, m.api(path), scope).Inc()
}

// gauges reports token and ticket TTLs and breaker state at scrape time,
// so they are exact whenever they are read.
type gauges struct {
	p   *Proxy
	ttl *prometheus.Desc
	tkt *prometheus.Desc
	brk *prometheus.Desc
	buf *prometheus.Desc
	up  *prometheus.Desc
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.ttl
	ch <- g.tkt
	ch <- g.brk
	ch <- g.buf
	ch <- g.up
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(g.buf, prometheus.GaugeValue, float64(g.p.Buffered()))
	now := g.p.now()
	for _, a := range g.p.appList {
		ttl := 0.0
		if t := a.Tokens.Current(); t.Valid(now) {
			ttl = t.ExpiresAt.Sub(now).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(g.ttl, prometheus.GaugeValue, ttl, a.Name)
		if a.Tickets != nil {
			for _, st := range a.Tickets.Statuses() {
				ttl := 0.0
				if t := st.Token; t.Valid(now) {
					ttl = t.ExpiresAt.Sub(now).Seconds()
				}
				ch <- prometheus.MustNewConstMetric(g.tkt, prometheus.GaugeValue, ttl, a.Name, string(st.Type))
			}
		}
		if a.Breaker != nil {
			ch <- prometheus.MustNewConstMetric(g.brk, prometheus.GaugeValue, StateValue(a.Breaker.cb.Load().State()), a.Name)
		}
		if a.failover != nil {
			for i := range a.failover.Len() {
				ch <- prometheus.MustNewConstMetric(g.up, prometheus.GaugeValue, b2f(a.failover.Up(i)), a.Name, a.failover.URL(i))
			}
			continue
		}
		// One upstream: it is up unless the app's breaker is open.
		up := a.Breaker == nil || a.Breaker.cb.Load().State() != gobreaker.StateOpen
		ch <- prometheus.MustNewConstMetric(g.up, prometheus.GaugeValue, b2f(up), a.Name, a.Upstream.String())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
