package wechatsim

import (
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// LoadConfig reads the YAML configuration file of the wechatsim command:
//
//	apps:
//	  - {appid: wx0123456789abcdef, secret: s3cret, kind: official}  # kind: official | miniprogram | wecom
//	  - {appid: ww0123456789abcdef, secret: agent-secret, kind: wecom}
//	quotas:
//	  /cgi-bin/message/custom/send: {per_minute: 600, per_day: 500000}
//	latency: 0ms
//	token_ttl: 7200s
//	ticket_grace: 5m
//	rid_records: 100000
//	suites:     # WeCom third-party suites; callback defaults to -callback
//	  - {suite_id: wwsuite0000000001, secret: s, token: t, encoding_aes_key: 43-chars, callback: URL}
//	providers:  # WeCom service providers
//	  - {corpid: wwprovider0000001, secret: provider-secret}
//
// Unknown or repeated keys and values of the wrong type are errors naming the
// key path ("apps[1].secrett: unknown key"). The values themselves are
// checked by New.
func LoadConfig(path string) (Options, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Options{}, fmt.Errorf("wechatsim: config: %w", err)
	}
	opts, err := parseConfig(data)
	if err != nil {
		return Options{}, fmt.Errorf("wechatsim: config %s: %w", path, err)
	}
	return opts, nil
}

func parseConfig(data []byte) (Options, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Options{}, err
	}
	var opts Options
	if len(doc.Content) == 0 {
		return opts, nil // an empty file configures nothing
	}
	err := eachKey(doc.Content[0], "", func(key string, v *yaml.Node) error {
		var err error
		switch key {
		case "apps":
			opts.Apps, err = parseApps(v)
		case "quotas":
			opts.Quotas, err = parseQuotas(v)
		case "latency":
			opts.Latency, err = parseDuration(v, key)
		case "token_ttl":
			opts.TokenTTL, err = parseDuration(v, key)
		case "ticket_grace":
			opts.TicketGrace, err = parseDuration(v, key)
		case "rid_records":
			err = decode(v, key, &opts.RidRecords)
		case "suites":
			opts.Suites, err = parseSuites(v)
		case "providers":
			opts.Providers, err = parseProviders(v)
		default:
			err = fmt.Errorf("%s: unknown key (want apps, quotas, latency, token_ttl, ticket_grace, rid_records, suites or providers)", key)
		}
		return err
	})
	return opts, err
}

func parseApps(n *yaml.Node) ([]App, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("apps: line %d: want a list of {appid, secret, kind}", n.Line)
	}
	apps := make([]App, len(n.Content))
	for i, item := range n.Content {
		at := fmt.Sprintf("apps[%d]", i)
		err := eachKey(item, at, func(key string, v *yaml.Node) error {
			switch key {
			case "appid":
				return decode(v, at+"."+key, &apps[i].AppID)
			case "secret":
				return decode(v, at+"."+key, &apps[i].Secret)
			case "kind":
				return decode(v, at+"."+key, &apps[i].Kind)
			}
			return fmt.Errorf("%s.%s: unknown key (want appid, secret or kind)", at, key)
		})
		if err != nil {
			return nil, err
		}
	}
	return apps, nil
}

func parseSuites(n *yaml.Node) ([]Suite, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("suites: line %d: want a list of {suite_id, secret, token, encoding_aes_key, callback}", n.Line)
	}
	suites := make([]Suite, len(n.Content))
	for i, item := range n.Content {
		at := fmt.Sprintf("suites[%d]", i)
		fields := map[string]*string{"suite_id": &suites[i].SuiteID, "secret": &suites[i].Secret, "token": &suites[i].Token,
			"encoding_aes_key": &suites[i].AESKey, "callback": &suites[i].Callback}
		err := eachKey(item, at, func(key string, v *yaml.Node) error {
			if f := fields[key]; f != nil {
				return decode(v, at+"."+key, f)
			}
			return fmt.Errorf("%s.%s: unknown key (want suite_id, secret, token, encoding_aes_key or callback)", at, key)
		})
		if err != nil {
			return nil, err
		}
	}
	return suites, nil
}

func parseProviders(n *yaml.Node) ([]Provider, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("providers: line %d: want a list of {corpid, secret}", n.Line)
	}
	providers := make([]Provider, len(n.Content))
	for i, item := range n.Content {
		at := fmt.Sprintf("providers[%d]", i)
		err := eachKey(item, at, func(key string, v *yaml.Node) error {
			switch key {
			case "corpid":
				return decode(v, at+"."+key, &providers[i].CorpID)
			case "secret":
				return decode(v, at+"."+key, &providers[i].Secret)
			}
			return fmt.Errorf("%s.%s: unknown key (want corpid or secret)", at, key)
		})
		if err != nil {
			return nil, err
		}
	}
	return providers, nil
}

func parseQuotas(n *yaml.Node) (map[string]Quota, error) {
	quotas := make(map[string]Quota)
	err := eachKey(n, "quotas", func(path string, v *yaml.Node) error {
		at := "quotas." + path
		var q Quota
		err := eachKey(v, at, func(key string, v *yaml.Node) error {
			switch key {
			case "per_minute":
				return decode(v, at+"."+key, &q.PerMinute)
			case "per_day":
				return decode(v, at+"."+key, &q.PerDay)
			}
			return fmt.Errorf("%s.%s: unknown key (want per_minute or per_day)", at, key)
		})
		quotas[path] = q
		return err
	})
	return quotas, err
}

func parseDuration(n *yaml.Node, at string) (time.Duration, error) {
	var s string
	if err := decode(n, at, &s); err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: want a duration such as 250ms or 7200s: %w", at, err)
	}
	return d, nil
}

// eachKey calls fn for every key of the mapping n, refusing anything else
// and repeated keys.
func eachKey(n *yaml.Node, at string, fn func(key string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		if at == "" {
			return fmt.Errorf("line %d: want a mapping of keys", n.Line)
		}
		return fmt.Errorf("%s: line %d: want a mapping of keys", at, n.Line)
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: line %d: keys must be plain strings", at, k.Line)
		}
		if seen[k.Value] {
			return fmt.Errorf("%s: line %d: duplicate key", join(at, k.Value), k.Line)
		}
		seen[k.Value] = true
		if err := fn(k.Value, n.Content[i+1]); err != nil {
			return err
		}
	}
	return nil
}

func join(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}

// decode decodes a scalar into v, naming the key on a type error.
func decode(n *yaml.Node, at string, v any) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: line %d: want a single value", at, n.Line)
	}
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			want := "string"
			if _, ok := v.(*int); ok {
				want = "integer"
			}
			return fmt.Errorf("%s: line %d: %q is not a valid %s", at, n.Line, n.Value, want)
		}
		return fmt.Errorf("%s: %w", at, err)
	}
	return nil
}
