package querylimits

import (
	"bytes"
	"hash/maphash"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/gencache"
)

// parsed is what the limits need of one query, computed on its first sight: dashboards repeat the same queries,
// so the parse is paid once and every later check walks the small span tree only.
type parsed struct {
	// q is the query, which tells apart two queries of one hash.
	q    string
	root node
	// err is why the query cannot be parsed; the limits that need the parse refuse such a query.
	err error
	// reach is the span of root as a few numbers, when the query qualifies.
	reach reach
	// unresolved is the first @ modifier whose time is not known before the query runs.
	unresolved string
	// blocked[i] says whether the config's pattern i matches the query.
	blocked []bool
	// bareSubquery: a subquery without a step of its own runs at the request's step, which min_step then judges.
	bareSubquery bool
}

// cache keeps parsed queries (internal/gencache), keyed by the query's hash: a query of kilobytes is hashed once
// whichever generation holds it, and compared once on a hit. Each config has its own, since the blocked patterns
// are part of what is cached, and each isolation unit's entries are kept apart in it (enforce.Parsed.Partition), as
// in the enforcer's caches.
type cache struct {
	seed maphash.Seed
	gen  *gencache.Cache[uint64, *parsed]
}

const (
	cacheBytes = 16 << 20
	// Longer queries are rare and would evict many others.
	cacheMaxQueryLen = 16 << 10
)

func newCache() *cache {
	return &cache{seed: maphash.MakeSeed(), gen: gencache.New(cacheBytes, func(_ uint64, p *parsed) int { return 2*len(p.q) + 256 })}
}

// parse returns the parsed form of q, from the cache or computed now, with the parse of an earlier step of the
// request when it has one (pq may be nil).
func (c *config) parse(q string, pq *enforce.Parsed) *parsed {
	part := pq.Partition()
	h := maphash.String(c.cache.seed, q)
	if p, ok := c.cache.gen.Get(part, h); ok && p.q == q {
		return p // another query of the same hash keeps the place and is never returned for q
	}
	p := c.analyze(q, pq)
	if len(q) <= cacheMaxQueryLen && !enforce.IsGateRefusal(p.err) {
		// A query read from a form may be a part of the whole body: the cache keeps a copy of its own.
		p.q = strings.Clone(q)
		c.cache.gen.Put(part, h, p)
	}
	return p
}

// span is where the query begins to read when evaluated over [from, to] at step (see spanOf), its finest subquery
// step, and whether an @ time is not a number: from the reach when the query has one, else from a walk of its tree.
func (p *parsed) span(from, to, step, now, lookback int64) (readFrom, minSubStep int64, atNaN bool) {
	if p.reach.ok && from > -reachBound && from < reachBound {
		return p.reach.from(from, step, lookback), p.reach.minSubStep, false
	}
	w := spanOf(&p.root, from, to, step, now, lookback)
	return w.from, w.minSubStep, w.atNaN
}

// instantSpan is span for /api/v1/query, which runs a query that is one rollup, `x[w] offset o` or
// `expr[w:s] offset o`, on a path of its own (VictoriaMetrics' IsMetricSelectorWithRollup and IsRollup): it drops
// an `@` there and reads at the request's time, and it reads a subquery's w and o in steps of s (`x[100i:1d]` is 100
// days back), not of the request's step. The span covers both readings.
func (p *parsed) instantSpan(from, to, step, now, lookback int64) (readFrom, minSubStep int64, atNaN bool) {
	readFrom, minSubStep, atNaN = p.span(from, to, step, now, lookback)
	r := p.root.unwrapped()
	if r.kind != kindRollup {
		return readFrom, minSubStep, atNaN
	}
	alt, changed := instantReading(r, step)
	if !changed {
		return readFrom, minSubStep, atNaN
	}
	w := spanOf(&alt, from, to, step, now, lookback)
	return min(readFrom, w.from), minSubStep, atNaN || w.atNaN
}

// instantReading is the rollup r as /api/v1/query runs it at the top of a query: its @ dropped, and a subquery's
// window and offset read in steps of its own step. changed says the reading differs from r's.
func instantReading(r *node, step int64) (alt node, changed bool) {
	alt, changed = *r, r.at != nil
	alt.at = nil
	if s := r.step.at(step); r.subquery && r.hasStep && s > 0 && (r.window.b != 0 || r.offset.b != 0) {
		alt.window, alt.offset = lin{a: float64(r.window.at(s))}, lin{a: float64(r.offset.at(s))}
		changed = true
	}
	return alt, changed
}

// hasBareSubquery says whether n holds a subquery without a step of its own, which runs at the request's step.
func hasBareSubquery(n *node) bool {
	if n.kind == kindRollup && n.subquery && !n.hasStep {
		return true
	}
	for i := range n.children {
		if hasBareSubquery(&n.children[i]) {
			return true
		}
	}
	return false
}

// analyze reads q once: the span tree, the @ modifiers and the blocked patterns, none of which depends on the time
// of the request. The expression is the request's shared parse, read and never changed.
func (c *config) analyze(q string, pq *enforce.Parsed) *parsed {
	p := &parsed{q: q}
	e, err := pq.Parse(q)
	if err != nil {
		p.err = err
		return p
	}
	p.root = compile(e, 0, &p.unresolved)
	p.bareSubquery = hasBareSubquery(&p.root)
	if p.unresolved == "" {
		p.reach = reachOf(&p.root)
	}
	if len(c.patterns) == 0 {
		return p
	}
	p.blocked = make([]bool, len(c.patterns))
	// Regexps are tried on the printed form, exact patterns compared with the normal form (normalize.go). Both are
	// printed when first needed, into buffers kept for the next query.
	var canon, norm []byte
	var ne metricsql.Expr
	var bufs [2]*[]byte
	print := func(e metricsql.Expr, i int) []byte {
		bufs[i] = canonBufs.Get().(*[]byte)
		*bufs[i] = e.AppendString((*bufs[i])[:0])
		return *bufs[i]
	}
	defer func() {
		for _, b := range bufs {
			if b != nil && cap(*b) <= 2*cacheMaxQueryLen {
				canonBufs.Put(b)
			}
		}
	}()
	var subs map[string]bool
	for i, pt := range c.patterns {
		if pt.re != nil {
			if canon == nil {
				canon = print(e, 0)
			}
			p.blocked[i] = pt.matches(q) || (string(canon) != q && pt.matchesBytes(canon))
			continue
		}
		if ne == nil {
			ne = normalize(e)
			norm = print(ne, 1)
		}
		if pt.canonical == string(norm) {
			p.blocked[i] = true
			continue
		}
		if !bytes.Contains(norm, []byte(pt.canonical)) {
			continue // a subexpression prints as a part of the whole
		}
		if subs == nil {
			subs = subexpressions(ne, maxSubexpressionBytes)
		}
		// Past the bound the pattern's text is in the query and cannot be cleared as only part of a subexpression:
		// blocked.
		p.blocked[i] = subs == nil || subs[pt.canonical]
	}
	return p
}

// maxSubexpressionBytes bounds the printing of subexpressions: each is printed whole, so a deep query prints
// about its depth times its size.
const maxSubexpressionBytes = 4 << 20

// canonBufs hold the buffers the canonical forms of queries are printed into; one larger than a query the cache
// keeps is dropped rather than kept.
var canonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// subexpressions are the canonical forms of every subexpression of e: an exact pattern blocks a query that
// merely wraps it (`count({__name__=~".+"}) > 0`). It is nil when they print to more than most bytes together.
func subexpressions(e metricsql.Expr, most int) map[string]bool {
	out := map[string]bool{}
	var buf []byte
	printed := 0
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		if out == nil {
			return
		}
		switch x.(type) {
		case *metricsql.MetricExpr, *metricsql.RollupExpr, *metricsql.FuncExpr, *metricsql.AggrFuncExpr, *metricsql.BinaryOpExpr:
			buf = x.AppendString(buf[:0])
			if printed += len(buf); printed > most {
				out = nil
				return
			}
			out[string(buf)] = true
		}
	})
	return out
}
