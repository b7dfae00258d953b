package querylimits

import (
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/vmgateway/vmgateway/internal/enforce"
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

// cache keeps parsed queries in two generations: when the current one holds cacheGenerationBytes of queries it
// becomes the previous one and the old previous one is dropped, so memory stays bounded and busy queries stay in.
// Each config has its own: the blocked patterns are part of what is cached.
type cache struct {
	mu        sync.RWMutex
	cur, prev map[string]*parsed
	curBytes  int
}

const (
	cacheGenerationBytes = 8 << 20
	// Longer queries are rare and would evict many others.
	cacheMaxQueryLen = 16 << 10
)

func newCache() *cache { return &cache{cur: map[string]*parsed{}} }

func (c *cache) get(q string) *parsed {
	c.mu.RLock()
	p, ok := c.cur[q]
	if !ok {
		p = c.prev[q]
	}
	c.mu.RUnlock()
	if p != nil && !ok {
		c.put(q, p) // still in use: keep it over the next rotation
	}
	return p
}

func (c *cache) put(q string, p *parsed) {
	if len(q) > cacheMaxQueryLen {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[q]; ok {
		return
	}
	if c.curBytes >= cacheGenerationBytes {
		c.prev, c.cur, c.curBytes = c.cur, make(map[string]*parsed, len(c.cur)), 0
	}
	c.cur[q] = p
	c.curBytes += 2*len(q) + 256
}

// parse returns the parsed form of q, from the cache or computed now.
func (c *config) parse(q string) *parsed {
	if p := c.cache.get(q); p != nil {
		return p
	}
	p := c.analyze(q)
	c.cache.put(q, p)
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
