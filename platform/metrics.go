package platform

import "github.com/prometheus/client_golang/prometheus"

// collector reports wxproxy_authorizers{platform,state} at scrape time.
type collector struct {
	ps   []Counted
	desc *prometheus.Desc
}

// Counted is a holder of authorizers the collector counts: a Platform,
// or a WeCom suite (whose corps are counted the same way).
type Counted interface {
	Name() string
	Stats() Stats
}

// NewCollector returns the collector of wxproxy_authorizers{platform,state}
// (state: ok, refreshing, unauthorized) for ps, counted at scrape time.
func NewCollector(ps []Counted) prometheus.Collector {
	return &collector{ps: ps, desc: prometheus.NewDesc("wxproxy_authorizers",
		"Merchants (authorizers) of each third-party platform by state: ok, refreshing (token fetches failing), unauthorized (must authorize again).",
		[]string{"platform", "state"}, nil)}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.ps {
		s := p.Stats()
		for state, n := range map[string]int{StateOK: s.OK, StateRefreshing: s.Refreshing, StateUnauthorized: s.Unauthorized} {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), p.Name(), state)
		}
	}
}
