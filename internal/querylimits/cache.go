package querylimits

import (
	"strings"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/gencache"
)

// parsed is what the limits need of one query, computed on its first sight: dashboards repeat the same queries,
// so the parse is paid once and every later check walks the small span tree only.
type parsed struct {
	root node
	// err is why the query cannot be parsed; the limits that need the parse refuse such a query.
	err error
	// unresolved is the first @ modifier whose time is not known before the query runs.
	unresolved string
	// blocked[i] says whether the config's pattern i matches the query.
	blocked []bool
}

// newCache keeps parsed queries (internal/gencache). Each config has its own: the blocked patterns are part of
// what is cached.
func newCache() *gencache.Cache[string, *parsed] {
	return gencache.New(cacheGenerationBytes, func(q string, _ *parsed) int { return 2*len(q) + 256 })
}

const (
	cacheGenerationBytes = 8 << 20
	// Longer queries are rare and would evict many others.
	cacheMaxQueryLen = 16 << 10
)

// parse returns the parsed form of q, from the cache or computed now.
func (c *config) parse(q string) *parsed {
	if p, ok := c.cache.Get(q); ok {
		return p
	}
	p := c.analyze(q)
	if len(q) <= cacheMaxQueryLen {
		c.cache.Put(q, p)
	}
	return p
}

func (c *config) analyze(q string) *parsed {
	p := &parsed{}
	if err := enforce.CheckWithBudget(q); err != nil {
		p.err = err
		return p
	}
	e, err := metricsql.Parse(q)
	if err != nil {
		p.err = err
		return p
	}
	p.root = compile(e, 0, &p.unresolved)
	if len(c.patterns) == 0 {
		return p
	}
	p.blocked = make([]bool, len(c.patterns))
	canon := string(e.AppendString(nil))
	var subs map[string]bool
	for i, pt := range c.patterns {
		if pt.re != nil {
			p.blocked[i] = pt.re.MatchString(q) || pt.re.MatchString(canon)
			continue
		}
		if pt.canonical == canon {
			p.blocked[i] = true
			continue
		}
		if !strings.Contains(canon, pt.canonical) {
			continue // a subexpression prints as a part of the whole
		}
		if subs == nil {
			subs = subexpressions(e)
		}
		p.blocked[i] = subs[pt.canonical]
	}
	return p
}

// subexpressions are the canonical forms of every subexpression of e: an exact pattern blocks a query that
// merely wraps it (`count({__name__=~".+"}) > 0`).
func subexpressions(e metricsql.Expr) map[string]bool {
	out := map[string]bool{}
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		switch x.(type) {
		case *metricsql.MetricExpr, *metricsql.RollupExpr, *metricsql.FuncExpr, *metricsql.AggrFuncExpr, *metricsql.BinaryOpExpr:
			out[string(x.AppendString(nil))] = true
		}
	})
	return out
}
