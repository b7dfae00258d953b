// Package limitfile reads the limits config of -ratelimit.config: it parses and validates the file, reporting
// every problem with its line, and selects the limits that apply to a tenant. It holds no runtime state: the
// gate (package ratelimit) counts and enforces, and -querylimits.config reuses its keys and its reading of a
// config given as a path or a URL.
package limitfile

import (
	"math"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/vmgateway/vmgateway/internal/confsource"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// Type is what a limit counts.
type Type uint8

const (
	// Queries counts read requests (vm_tenant_select_requests_total).
	Queries Type = iota + 1
	// RowsInserted counts ingested samples (vm_tenant_inserted_rows_total).
	RowsInserted
	// NewSeries counts created series, the churn (vm_tenant_timeseries_created_total).
	NewSeries
	// ActiveSeries is the current number of active series (vm_tenant_active_timeseries); it has no window.
	ActiveSeries
	// SeriesFetched sums the series the tenant's queries fetched, as VictoriaMetrics reports them at the end of
	// each query answer ("stats":{"seriesFetched":"N"}); counted by the gateway alone.
	SeriesFetched
	// QueryTimeMs sums the milliseconds VictoriaMetrics spent executing the tenant's queries
	// ("stats":{"executionTimeMsec":M}); counted by the gateway alone.
	QueryTimeMs
)

var typeNames = [...]string{Queries: "queries", RowsInserted: "rows_inserted", NewSeries: "new_series", ActiveSeries: "active_series",
	SeriesFetched: "series_fetched", QueryTimeMs: "query_time_ms"}

const typeList = "queries, rows_inserted, new_series, active_series, series_fetched, query_time_ms"

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "unknown"
}

// Resolution is the window a limit sums over. ActiveSeries limits have none (the zero Resolution).
type Resolution uint8

const (
	// Minute sums over the last minute.
	Minute Resolution = iota + 1
	// Hour sums over the last hour.
	Hour
)

func (r Resolution) String() string {
	switch r {
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	}
	return ""
}

// Limit is one entry of the limits config.
type Limit struct {
	Type       Type
	Resolution Resolution
	// Value is the most usage allowed: a tenant whose usage reaches it is rejected.
	Value uint64
	// Unlimited (value: unlimited) lifts, for the limit's tenant, the default of the same type, resolution and
	// key; such a limit is never in force, so Value is 0 and no Set method but Tenants shows it.
	Unlimited bool
	// Tenant is the tenant the limit is for; without HasTenant it is the default for every tenant.
	Tenant    tenant.ID
	HasTenant bool
	// Key, when set, gives each value of a token's claim or extra label a count of its own within the tenant.
	Key Key
}

// Counted reports whether the gateway counts the type's usage itself: requests one at a time, and the costs of
// the answers it forwards. Only such limits can have a key.
func (t Type) Counted() bool { return t == Queries || t.Cost() }

// Cost reports whether the type sums what queries cost, read from the stats at the end of their answers: known
// only once a query has been answered, so a tenant is refused the request after the one that used up its budget.
// The datasource has no figure for them.
func (t Type) Cost() bool { return t == SeriesFetched || t == QueryTimeMs }

// Set is a parsed limits config, immutable once built.
type Set struct {
	all      []Limit
	defaults []Limit
	// own holds each tenant's limits, the lifts (Unlimited) among them, which take a default's place like any other.
	own     map[tenant.ID][]Limit
	tenants []tenant.ID
	lifts   []Limit
}

// Lifts are the defaults lifted for a tenant (value: unlimited), in the config's order.
func (l *Set) Lifts() []Limit { return l.lifts }

// All is every limit in force somewhere, in the config's order: the lifts are not limits.
func (l *Set) All() []Limit { return l.all }

// Defaults are the limits without a tenant: they apply to every tenant without one of its own in their place.
func (l *Set) Defaults() []Limit { return l.defaults }

// Tenants are the tenants with limits of their own, in the config's order.
func (l *Set) Tenants() []tenant.ID { return l.tenants }

// ForTenant returns the limits that apply to id: its own, and the defaults of the types, resolutions and keys it
// has none for (nor lifts).
func (l *Set) ForTenant(id tenant.ID) []Limit {
	own := l.own[id]
	if len(own) == 0 {
		return l.defaults
	}
	var out []Limit
	for _, o := range own {
		if !o.Unlimited {
			out = append(out, o)
		}
	}
	for _, d := range l.defaults {
		// A tenant's own limit of the same type, resolution and key takes the place of the default.
		if !slices.ContainsFunc(own, d.samePlace) {
			out = append(out, d)
		}
	}
	return out
}

// samePlace reports whether o would take l's place (or l o's): one type, resolution and key.
func (l Limit) samePlace(o Limit) bool {
	return o.Type == l.Type && o.Resolution == l.Resolution && o.Key == l.Key
}

func newSet(all []Limit) *Set {
	l := &Set{own: map[tenant.ID][]Limit{}}
	for _, lim := range all {
		if lim.Unlimited {
			l.lifts = append(l.lifts, lim)
		} else {
			l.all = append(l.all, lim)
		}
		if !lim.HasTenant {
			l.defaults = append(l.defaults, lim)
			continue
		}
		if _, seen := l.own[lim.Tenant]; !seen {
			l.tenants = append(l.tenants, lim.Tenant)
		}
		l.own[lim.Tenant] = append(l.own[lim.Tenant], lim)
	}
	return l
}

const idRange = "an integer in [0..4294967295]"

// Parse reads a limits config. source names it in errors (the file path or URL, as confsource.Show shows it); an
// invalid config gives a *confsource.Problems listing every problem with its line.
func Parse(data []byte, source string) (*Set, error) {
	list, p, err := confsource.TopList{What: "limits config", Key: "limits", Items: "limits", ForNone: "for no limits"}.Parse(data, source)
	if err != nil {
		return nil, err
	}
	addf := p.Add
	var all []Limit
	var lines []*yaml.Node // of all's limits
	if list != nil {
		// A limit is identified by its meter and whom it is for; its value is what may differ.
		seen := map[Limit]int{}
		for _, item := range list.Content {
			item = confsource.Resolve(item)
			l, ok := parseLimit(item, addf)
			if !ok {
				continue
			}
			id := l
			id.Value, id.Unlimited = 0, false
			if line, dup := seen[id]; dup {
				addf(item, "duplicate limit: %s already has %s at line %d", who(l), what(l), line)
				continue
			}
			seen[id] = item.Line
			all = append(all, l)
			lines = append(lines, item)
		}
	}
	for i, l := range all {
		// A lift of nothing is a limit the operator believes gone that was never there, or one that stays: a
		// default per hour is not lifted by `unlimited` per minute.
		if l.Unlimited && !slices.ContainsFunc(all, func(d Limit) bool { return !d.HasTenant && d.samePlace(l) }) {
			addf(lines[i], "value: unlimited lifts, for tenant %s, the default of the same type, resolution and key, and the defaults "+
				"have no %s: remove this limit, or give the default it should lift", l.Tenant, strings.TrimPrefix(what(l), "a "))
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return newSet(all), nil
}

func who(l Limit) string {
	if l.HasTenant {
		return "tenant " + l.Tenant.String()
	}
	return "the default for all tenants"
}

func what(l Limit) string {
	s := "a limit on " + l.Type.String()
	if l.Resolution != 0 {
		s += " per " + l.Resolution.String()
	}
	if !l.Key.IsZero() {
		s += " by " + l.Key.String()
	}
	return s
}

type addFunc func(n *yaml.Node, format string, args ...any)

func parseLimit(item *yaml.Node, addf addFunc) (Limit, bool) {
	if item.Kind != yaml.MappingNode {
		addf(item, "want a limit (a mapping with type and value), got %s", confsource.Describe(item))
		return Limit{}, false
	}
	var l Limit
	var typeNode, valueNode, resNode, accNode, projNode, keyNode *yaml.Node
	bad := 0
	addf2 := func(n *yaml.Node, format string, args ...any) { bad++; addf(n, format, args...) }
	confsource.EachKey(item, addf2, func(key, val *yaml.Node) {
		switch key.Value {
		case "type":
			typeNode = val
		case "value":
			valueNode = val
		case "resolution":
			resNode = val
		case "account_id":
			accNode = val
		case "project_id":
			projNode = val
		case "key":
			keyNode = val
		default:
			addf2(key, "unknown key %q: a limit has type, value, resolution, account_id and project_id, and key for a limit per identity", key.Value)
		}
	})
	if typeNode == nil {
		addf2(item, "the limit has no type: want one of "+typeList)
	} else if l.Type = parseType(typeNode); l.Type == 0 {
		addf2(typeNode, "type: want one of "+typeList+", got %s", confsource.Describe(typeNode))
	}
	l.Resolution = parseResolution(l.Type, resNode, addf2)
	l.Tenant, l.HasTenant = parseTenant(accNode, projNode, addf2)
	switch {
	case valueNode == nil:
		addf2(item, "the limit has no value: want a positive integer, or unlimited to lift a default for one tenant")
	case isScalar(valueNode, "unlimited") && accNode == nil && projNode == nil:
		addf2(valueNode, "value: unlimited lifts a default for one tenant (give account_id); a default without a limit is no entry at all")
	case isScalar(valueNode, "unlimited"):
		// A tenant that does not parse has its own error already.
		l.Unlimited = true
	default:
		if v, ok := parseInt(valueNode, math.MaxInt64); !ok || v == 0 {
			addf2(valueNode, "value: want a positive integer (or unlimited, in a tenant's limit), got %s", confsource.Describe(valueNode))
		} else {
			l.Value = v
		}
	}
	if keyNode != nil {
		l.Key = parseLimitKey(l.Type, keyNode, addf2)
	}
	return l, bad == 0
}

// parseResolution reads the resolution of a limit of type t; n is nil when the limit has none.
func parseResolution(t Type, n *yaml.Node, addf addFunc) Resolution {
	switch {
	case n == nil:
		if t != ActiveSeries {
			return Minute
		}
	case t == ActiveSeries:
		addf(n, "resolution: active_series is a current count, not a sum over a window: remove the resolution")
	case isScalar(n, "minute"):
		return Minute
	case isScalar(n, "hour"):
		return Hour
	default:
		addf(n, "resolution: want minute or hour, got %s", confsource.Describe(n))
	}
	return 0
}

// parseTenant reads whom a limit is for: the tenant of acc and proj, or, without both, every tenant.
func parseTenant(acc, proj *yaml.Node, addf addFunc) (id tenant.ID, has bool) {
	if acc != nil {
		if v, ok := parseInt(acc, math.MaxUint32); ok {
			id.AccountID, has = uint32(v), true
		} else {
			addf(acc, "account_id: want %s, got %s", idRange, confsource.Describe(acc))
		}
	}
	if proj != nil {
		if v, ok := parseInt(proj, math.MaxUint32); ok {
			id.ProjectID = uint32(v)
		} else {
			addf(proj, "project_id: want %s, got %s", idRange, confsource.Describe(proj))
		}
		if acc == nil {
			addf(proj, "project_id without account_id: a limit is for one tenant (account_id, and project_id which defaults to 0) or, without both, for all tenants")
		}
	}
	return id, has
}

// parseLimitKey reads the key of a limit of type t.
func parseLimitKey(t Type, n *yaml.Node, addf addFunc) Key {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		addf(n, "key: want claim:<name> or label:<name>, got %s", confsource.Describe(n))
		return Key{}
	}
	k, err := ParseKey(n.Value)
	if err != nil {
		addf(n, "key: %s", err)
		return Key{}
	}
	if t != 0 && !t.Counted() {
		addf(n, "key: only queries, series_fetched and query_time_ms limits can have a key: the gateway counts requests and query costs per key itself, "+
			"but it never sees the %s of a write (bodies stream through unread), and the datasource reports usage per tenant only", t)
		return Key{}
	}
	return k
}

func parseType(n *yaml.Node) Type {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return 0
	}
	if t := slices.Index(typeNames[:], n.Value); n.Value != "" && t > 0 {
		return Type(t)
	}
	return 0
}

func isScalar(n *yaml.Node, s string) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == s
}

// parseInt accepts a YAML integer in [0..max]; quoted numbers are strings, not integers.
func parseInt(n *yaml.Node, max uint64) (uint64, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return 0, false
	}
	var v uint64
	if err := n.Decode(&v); err != nil || v > max {
		return 0, false
	}
	return v, true
}
