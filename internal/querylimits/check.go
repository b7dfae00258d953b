package querylimits

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/route"
)

// apiKind is how an API's time range is read.
type apiKind uint8

const (
	apiOther apiKind = iota
	// apiQuery: query at time (default now), step (default 5m).
	apiQuery
	// apiRange: query over start..end (defaults now-5m..now) at step (default 5m).
	apiRange
	// apiExport: match[] over start..end; without start, from the beginning of the retention.
	apiExport
	// apiSeries: match[] over start..end; without start, the last day from 00:00 UTC.
	apiSeries
	// apiFederate: the latest samples, max_lookback (default 5m) back from end, or start..end.
	apiFederate
	// apiTSDB: the index of one day, date (default today).
	apiTSDB
	// apiUnjudged: reads over a time range the gateway does not read (Graphite); refused under span limits.
	apiUnjudged
)

func kindOf(rt route.Route) apiKind {
	if rt.Kind != route.Read {
		return apiOther
	}
	switch rt.API {
	case "query":
		return apiQuery
	case "query_range", "query_exemplars":
		return apiRange
	case "export", "export_csv", "export_native":
		return apiExport
	case "series", "labels", "label_values":
		return apiSeries
	case "federate":
		return apiFederate
	case "status_tsdb":
		return apiTSDB
	}
	if strings.HasPrefix(rt.API, "graphite_") && rt.API != "graphite_functions" {
		return apiUnjudged
	}
	return apiOther
}

const (
	day          = int64(24 * time.Hour / time.Millisecond)
	defaultStep  = int64(5 * time.Minute / time.Millisecond)
	blockedLimit = "blocked_queries"
)

var rejected = func() map[string]*metrics.Counter {
	m := map[string]*metrics.Counter{}
	for _, n := range append(fieldNames[:], blockedLimit) {
		m[n] = metrics.NewCounter(`vmgateway_querylimits_rejected_total{limit="` + n + `"}`)
	}
	return m
}()

// Applies says whether the limits of the caller's tenant concern a request of this route, so that the gateway
// reads the args only then.
func (c *config) Applies(a *auth.Access, rt route.Route) bool {
	return kindOf(rt) != apiOther && !c.forTenant(a.Tenant).empty()
}

// Check judges one read request of the caller's tenant against its query limits, from the args of the URL and of
// the form body (VictoriaMetrics reads both; every value of a repeated arg is judged, the widest counts). A query
// is parsed through in.Parsed, so that the rewrite after the check parses it no more. It returns the timeout to
// send upstream as the timeout arg ("" for none) or the refusal: 422 naming the limit, its value, what the request
// asked for and whom the limit is for; 400 for args the limits cannot read.
func (c *config) Check(a *auth.Access, rt route.Route, in enforce.Args, now time.Time) (string, error) {
	rs := c.forTenant(a.Tenant)
	kind := kindOf(rt)
	if rs.empty() || kind == apiOther {
		return "", nil
	}
	if in.Known == nil {
		return c.checkGathered(a, rt, in, now)
	}
	ck := checker{cfg: c, rs: rs, a: a, parsed: in.Parsed, now: now.UnixMilli(), known: in.Known}
	if kind == apiUnjudged {
		for _, f := range []field{maxQueryLookback, maxTotalQueryLength} {
			for _, r := range rs.rules[f] {
				return "", ck.refuse(f, r, "query limit %s exceeded: the %s API reads a time range the gateway cannot check; "+
					"the limit is %s: query it through the Prometheus API (/api/v1/query_range)", rt.API)
			}
		}
		return "", nil
	}
	if err := ck.check(kind); err != nil {
		return "", err
	}
	return ck.timeout()
}

// checkGathered is Check for a caller that did not record the args: they are looked up. A function of its own, so
// that Check's frame does not hold (and zero) the values of every arg.
func (c *config) checkGathered(a *auth.Access, rt route.Route, in enforce.Args, now time.Time) (string, error) {
	var known enforce.Known
	gather(&known, kindOf(rt), in.Form, in.URL)
	in.Known = &known
	return c.Check(a, rt, in, now)
}

type checker struct {
	cfg    *config
	rs     *ruleSet
	a      *auth.Access
	parsed *enforce.Parsed
	now    int64
	// known are the values of the args the limits read: the form's, then the URL's.
	known *enforce.Known
}

// argsOf are the args the limits read for each kind of API, as a set of bits.
var argsOf = func() (m [apiUnjudged + 1]uint16) {
	set := func(args ...enforce.Arg) (bits uint16) {
		for _, a := range args {
			bits |= 1 << a
		}
		return bits
	}
	common := set(enforce.ArgTimeout)
	m[apiQuery] = common | set(enforce.ArgQuery, enforce.ArgTime, enforce.ArgStep, enforce.ArgLatencyOffset, enforce.ArgMaxLookback, enforce.ArgLookbackDelta)
	m[apiRange] = common | set(enforce.ArgQuery, enforce.ArgStart, enforce.ArgEnd, enforce.ArgStep, enforce.ArgLatencyOffset, enforce.ArgMaxLookback, enforce.ArgLookbackDelta)
	m[apiExport] = common | set(enforce.ArgMatch, enforce.ArgMatchLegacy, enforce.ArgStart, enforce.ArgEnd)
	m[apiSeries] = m[apiExport]
	m[apiFederate] = m[apiExport] | set(enforce.ArgMaxLookback)
	m[apiTSDB] = common | set(enforce.ArgMatch, enforce.ArgMatchLegacy, enforce.ArgDate)
	return m
}()

// gatherOrder is the order gather looks args up in: the args of almost every request first, so that the lookups
// stop early (each hashes the name).
var gatherOrder = [enforce.NumArgs]enforce.Arg{enforce.ArgQuery, enforce.ArgMatch, enforce.ArgStart, enforce.ArgEnd, enforce.ArgStep, enforce.ArgTime, enforce.ArgTimeout, enforce.ArgMatchLegacy,
	enforce.ArgDate, enforce.ArgLatencyOffset, enforce.ArgMaxLookback, enforce.ArgLookbackDelta}

// gather looks up the args the limits read for an API of kind, for a caller that split the args without
// recording them (enforce.Args.Known). Once as many args were found as a set holds, no other is in it.
func gather(known *enforce.Known, kind apiKind, form, args url.Values) {
	want := argsOf[kind]
	for i, vs := range [2]url.Values{enforce.FromForm: form, enforce.FromURL: args} {
		found := 0
		for _, k := range &gatherOrder {
			if found == len(vs) {
				break
			}
			if want&(1<<k) == 0 {
				continue
			}
			if v, ok := vs[k.String()]; ok {
				known.Set(k, i, v)
				found++
			}
		}
	}
}

// each calls f for every value of arg k, the form's first, as VictoriaMetrics' FormValue reads them.
func (ck *checker) each(k enforce.Arg, f func(v string) error) error {
	for _, vs := range ck.known.Values(k) {
		for _, v := range vs {
			if err := f(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// first is the value of arg k VictoriaMetrics reads (FormValue: the form's first, else the URL's), "" for none.
func (ck *checker) first(k enforce.Arg) string {
	vals := ck.known.Values(k)
	if f := vals[enforce.FromForm]; len(f) > 0 {
		return f[0]
	}
	if u := vals[enforce.FromURL]; len(u) > 0 {
		return u[0]
	}
	return ""
}

// times returns the earliest and latest value of a time arg; def stands for an absent or empty one.
func (ck *checker) times(k enforce.Arg, def int64) (lo, hi int64, err error) {
	if !ck.known.Has(k) {
		return def, def, nil
	}
	if n, ok := ck.known.Whole(k); ok && n >= 1e4 && n <= maxSeconds {
		// The common case, read as the args were split: one value of whole Unix seconds (parseTimeRange's first
		// reading; at least 5 digits, so no year).
		return n * 1000, n * 1000, nil
	}
	lo, hi = math.MaxInt64, math.MinInt64
	n := 0
	for _, vs := range ck.known.Values(k) {
		for _, v := range vs {
			n++
			tlo, thi := def, def
			if v != "" {
				if tlo, thi, err = parseTimeRange(v, ck.now); err != nil {
					return 0, 0, badArg(k.String(), v, err.Error())
				}
			}
			lo, hi = min(lo, tlo), max(hi, thi)
		}
	}
	if n == 0 {
		return def, def, nil
	}
	return lo, hi, nil
}

// durations returns the smallest and largest value of a duration arg; def stands for an absent or empty one.
func (ck *checker) durations(k enforce.Arg, def int64) (lo, hi int64, err error) {
	if !ck.known.Has(k) {
		return def, def, nil
	}
	if n, ok := ck.known.Whole(k); ok {
		return n * 1000, n * 1000, nil // parseDurationArg's whole seconds, read as the args were split
	}
	lo, hi = math.MaxInt64, math.MinInt64
	n := 0
	for _, vs := range ck.known.Values(k) {
		for _, v := range vs {
			n++
			d := def
			if v != "" {
				if d, err = parseDurationArg(v); err != nil {
					return 0, 0, badArg(k.String(), v, err.Error())
				}
			}
			lo, hi = min(lo, d), max(hi, d)
		}
	}
	if n == 0 {
		return def, def, nil
	}
	return lo, hi, nil
}

func badArg(k, v, why string) error {
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot read %s=%q to check the query limits: %s", k, v, why))
}

func (ck *checker) check(kind apiKind) error {
	exprArgs := []enforce.Arg{enforce.ArgMatch, enforce.ArgMatchLegacy}
	if kind == apiQuery || kind == apiRange {
		exprArgs = []enforce.Arg{enforce.ArgQuery}
	}
	for _, r := range ck.rs.rules[maxExprSize] {
		for _, k := range exprArgs {
			for _, vs := range ck.known.Values(k) {
				for _, v := range vs {
					if int64(len(v)) > r.v {
						return ck.refuse(maxExprSize, r, "query limit max_query_expression_size_bytes=%s exceeded: the %s arg is %d bytes; "+
							"the limit is %s: shorten the query, e.g. with a recording rule", k, len(v))
					}
				}
			}
		}
	}

	// from..to is the range the request is evaluated over; length is what max_total_query_length judges.
	var from, to, length, stepLo, stepHi int64
	var err error
	ranged := true
	switch kind {
	case apiQuery:
		ranged = false
		if from, to, err = ck.times(enforce.ArgTime, ck.now); err != nil {
			return err
		}
		if stepLo, stepHi, err = ck.durations(enforce.ArgStep, defaultStep); err != nil {
			return err
		}
		if ck.first(enforce.ArgStep) == "" {
			// Without a step VictoriaMetrics runs an instant query at the step of its max_lookback.
			for _, k := range []enforce.Arg{enforce.ArgMaxLookback, enforce.ArgLookbackDelta} {
				lo, hi, err := ck.durations(k, defaultStep)
				if err != nil {
					return err
				}
				stepLo, stepHi = min(stepLo, lo), max(stepHi, hi)
			}
		}
	case apiRange:
		if stepLo, stepHi, err = ck.durations(enforce.ArgStep, defaultStep); err != nil {
			return err
		}
		if from, _, err = ck.times(enforce.ArgStart, ck.now-defaultStep); err != nil {
			return err
		}
		if _, to, err = ck.times(enforce.ArgEnd, ck.now); err != nil {
			return err
		}
		for _, r := range ck.rs.rules[minStep] {
			if stepLo < r.v {
				return ck.refuse(minStep, r, "query limit min_step=%s exceeded: the step is %s; the limit is %s: use a coarser step", fmtDuration(stepLo))
			}
		}
	case apiExport, apiSeries, apiFederate:
		var endLo int64
		if endLo, to, err = ck.times(enforce.ArgEnd, ck.now); err != nil {
			return err
		}
		def := int64(0) // export: from the beginning of the retention
		switch kind {
		case apiSeries:
			// The last day from 00:00 UTC: never less than a day, at most two.
			def = sub(endLo, day)
			def -= def % day
		case apiFederate:
			_, lb, err := ck.durations(enforce.ArgMaxLookback, defaultStep)
			if err != nil {
				return err
			}
			def = sub(ck.now, lb)
			if ck.known.Has(enforce.ArgEnd) {
				// VictoriaMetrics looks back max_lookback only from an end within a second of now; from any
				// other end it reads from the beginning.
				def = 0
			}
		}
		if from, _, err = ck.times(enforce.ArgStart, max(def, 0)); err != nil {
			return err
		}
	case apiTSDB:
		from, to = math.MaxInt64, math.MinInt64
		today := ck.now - ck.now%day
		n := 0
		if err := ck.each(enforce.ArgDate, func(v string) error {
			n++
			d := today
			if v != "" {
				t, err := time.Parse("2006-01-02", v)
				if err != nil {
					return badArg("date", v, "want YYYY-MM-DD")
				}
				d = t.UnixMilli()
			}
			end := d + day
			if d <= 0 {
				end = ck.now // 1970-01-01 asks current VictoriaMetrics for the stats of all time
			}
			from, to = min(from, d), max(to, end)
			return nil
		}); err != nil {
			return err
		}
		if n == 0 {
			from, to = today, today+day
		}
	}
	if ranged {
		length = max(to-from, 0)
		for _, r := range ck.rs.rules[maxTotalQueryLength] {
			if length > r.v {
				return ck.refuse(maxTotalQueryLength, r, "query limit max_total_query_length=%s exceeded: the request spans %s (%s to %s); "+
					"the limit is %s: ask for a shorter time range", fmtDuration(length), fmtTime(from), fmtTime(to))
			}
		}
	}
	if kind == apiQuery || kind == apiRange {
		// VictoriaMetrics moves a time within latency_offset of now back to now - latency_offset.
		_, off, err := ck.durations(enforce.ArgLatencyOffset, 0)
		if err != nil {
			return err
		}
		from = min(from, sub(ck.now, off))
	}
	readFrom := from
	if kind == apiQuery || kind == apiRange {
		// VictoriaMetrics looks back max_lookback for the last sample of a selector without a window.
		var lookback int64
		for _, k := range []enforce.Arg{enforce.ArgMaxLookback, enforce.ArgLookbackDelta} {
			_, lb, err := ck.durations(k, 0)
			if err != nil {
				return err
			}
			lookback = max(lookback, lb)
		}
		if readFrom, err = ck.queries(kind, from, to, stepLo, stepHi, lookback); err != nil {
			return err
		}
	} else if err := ck.selectors(); err != nil {
		return err
	}
	if readFrom == math.MaxInt64 {
		return nil // the query reads no series
	}
	back := ck.now - readFrom
	for _, r := range ck.rs.rules[maxQueryLookback] {
		if back > r.v && back-r.v > lookbackGrace(r.v) {
			return ck.refuse(maxQueryLookback, r, "query limit max_query_lookback=%s exceeded: the request reads data from %s, %s before now; "+
				"the limit is %s: read a more recent time range (windows, offsets, subqueries and @ count)", fmtTime(readFrom), fmtDuration(back))
		}
	}
	return nil
}

// lookbackGrace is how much further back than max_query_lookback a request may read: a tenth of the limit, at most 5
// minutes. Clients evaluate at a time a little before the gateway's now: Grafana's dashboard time, tens of milliseconds,
// and vmalert's, aligned down to its evaluation interval; a 30-day SLO window equal to a limit of 30 days was refused at
// every evaluation (a legitimate user's review). Mimir, whose name the limit has, moves the start instead.
func lookbackGrace(limit int64) int64 { return min(5*60*1000, limit/10) }

// queries checks every query arg: blocked patterns, subquery steps, and the earliest time it reads.
func (ck *checker) queries(kind apiKind, from, to, stepLo, step, lookback int64) (int64, error) {
	rs := ck.rs
	needParse := len(rs.blocked) > 0 || len(rs.rules[maxQueryLookback]) > 0 || len(rs.rules[minStep]) > 0
	readFrom := int64(math.MaxInt64)
	if !needParse {
		return from, nil
	}
	for _, qs := range ck.known.Values(enforce.ArgQuery) {
		for _, q := range qs {
			from, err := ck.query(q, kind, from, to, stepLo, step, lookback)
			if err != nil {
				return 0, err
			}
			readFrom = min(readFrom, from)
		}
	}
	return readFrom, nil
}

// query checks one query arg and returns the earliest time it reads.
func (ck *checker) query(q string, kind apiKind, from, to, stepLo, step, lookback int64) (int64, error) {
	rs := ck.rs
	p := ck.cfg.parse(q, ck.parsed)
	if enforce.IsGateRefusal(p.err) {
		return 0, p.err
	}
	if p.err != nil {
		return 0, httperr.WithQuery(http.StatusBadRequest, "cannot parse the query to check the query limits: "+p.err.Error(),
			"cannot parse the query to check the query limits: "+httperr.Elided)
	}
	if err := ck.blocked(p, "query"); err != nil {
		return 0, err
	}
	span := p.span
	if kind == apiQuery {
		span = p.instantSpan
	}
	readFrom, minSubStep, atNaN := span(from, to, step, ck.now, lookback)
	for _, r := range rs.rules[minStep] {
		if minSubStep != 0 && minSubStep < r.v {
			return 0, ck.refuse(minStep, r, "query limit min_step=%s exceeded: a subquery has step %s; the limit is %s: use a coarser subquery step", fmtDuration(minSubStep))
		}
		// A range query's step is judged as the request's; an instant query's only runs a subquery without its own.
		if kind == apiQuery && p.bareSubquery && stepLo < r.v {
			return 0, ck.refuse(minStep, r, "query limit min_step=%s exceeded: a subquery without a step of its own runs at the request's step %s; "+
				"the limit is %s: give the subquery a coarser step or the request a coarser step", fmtDuration(stepLo))
		}
	}
	for _, r := range rs.rules[maxQueryLookback] {
		if p.unresolved != "" || atNaN {
			what := p.unresolved
			if what == "" {
				what = "an @ modifier"
			}
			err := ck.refuse(maxQueryLookback, r, "query limit max_query_lookback=%s exceeded: the time of %s is not known before the query runs; "+
				"the limit is %s: use a number, start(), end() or now() after @", what)
			if at, ok := strings.CutPrefix(what, "@ "); ok {
				// The expression after @ is the client's query text.
				msg := err.Error()
				return 0, httperr.WithQuery(http.StatusUnprocessableEntity, msg, strings.Replace(msg, at, httperr.Elided, 1))
			}
			return 0, err
		}
	}
	return readFrom, nil
}

// selectors checks the match[] args of the listing and export APIs against the blocked patterns.
func (ck *checker) selectors() error {
	if len(ck.rs.blocked) == 0 {
		return nil
	}
	for _, k := range []enforce.Arg{enforce.ArgMatch, enforce.ArgMatchLegacy} {
		if err := ck.each(k, func(m string) error {
			p := ck.cfg.parse(m, ck.parsed)
			if enforce.IsGateRefusal(p.err) {
				return p.err
			}
			if p.err != nil {
				return httperr.WithQuery(http.StatusBadRequest, fmt.Sprintf("cannot parse the %s arg to check the query limits: %s", k, p.err),
					fmt.Sprintf("cannot parse the %s arg to check the query limits: %s", k, httperr.Elided))
			}
			return ck.blocked(p, k.String())
		}); err != nil {
			return err
		}
	}
	return nil
}

func (ck *checker) blocked(p *parsed, arg string) error {
	for _, b := range ck.rs.blocked {
		for _, i := range b.patterns {
			if p.blocked[i] {
				pt := ck.cfg.patterns[i]
				how := "exactly"
				if pt.re != nil {
					how = "the regexp"
				}
				return ck.refuseBlocked(b.e, "query limit blocked_queries refused the request: the %s arg matches %s the blocked query %q; "+
					"the blocked queries are %s", arg, how, pt.text)
			}
		}
	}
	return nil
}

// timeout checks the client's own timeout args against query_timeout and returns the one to send when it has none.
func (ck *checker) timeout() (string, error) {
	rules := ck.rs.rules[queryTimeout]
	if len(rules) == 0 {
		return "", nil
	}
	vals := ck.known.Values(enforce.ArgTimeout)
	for _, vs := range vals {
		for _, v := range vs {
			if v == "" {
				continue
			}
			d, err := parseDurationArg(v)
			if err != nil {
				return "", badArg("timeout", v, err.Error())
			}
			for _, r := range rules {
				if d > r.v {
					return "", ck.refuse(queryTimeout, r, "query limit query_timeout=%s exceeded: the request asks for timeout=%s; the limit is %s: "+
						"ask for a shorter timeout or none", fmtDuration(d))
				}
			}
		}
	}
	// VictoriaMetrics reads the first value, the form's before the URL's (FormValue): an empty one there, or one of
	// no whole millisecond above 0, which it does not take, is no timeout at all, whatever follows (it then runs up
	// to its -search.maxQueryDuration, or -search.maxExportDuration), so the client's are replaced by the limit's.
	if first := ck.first(enforce.ArgTimeout); first != "" {
		if d, err := parseDurationArg(first); err == nil && d > 0 {
			return "", nil
		}
	}
	return ck.rs.timeout, nil
}

// refuse is the 422 of rule r of field f. format's first verb is the limit's value and its last the whom; args are
// what lies between.
func (ck *checker) refuse(f field, r rule, format string, args ...any) error {
	rejected[f.String()].Inc()
	v := strconv.FormatInt(r.v, 10)
	if f.isDuration() {
		v = fmtDuration(r.v)
	}
	if f == maxQueryLookback || f == maxTotalQueryLength {
		if strings.HasPrefix(format, "query limit %s exceeded") { // the unjudged API: the limit's name and value
			v = f.String() + "=" + v
		}
	}
	all := append(append([]any{v}, args...), ck.whom(r.e))
	return httperr.New(http.StatusUnprocessableEntity, fmt.Sprintf(format, all...))
}

func (ck *checker) refuseBlocked(e *entry, format string, args ...any) error {
	rejected[blockedLimit].Inc()
	return httperr.New(http.StatusUnprocessableEntity, fmt.Sprintf(format, append(args, ck.whom(e))...))
}

// whom names the tenant and key a limit is for, and where it comes from.
func (ck *checker) whom(e *entry) string {
	s := "tenant " + ck.a.Tenant.String() + "'s"
	if !e.key.IsZero() {
		s += fmt.Sprintf(" for %s=%q", e.key, e.key.Value(ck.a))
	}
	if e.hasTenant {
		return s + " (its own entry)"
	}
	return s + " (the default for all tenants)"
}
