package enforce

import (
	"errors"
	"fmt"

	"github.com/VictoriaMetrics/metricsql"
)

// Parsed holds the queries of one request as parsed, so that a query is parsed once per request however many
// steps read it: the query limits read the parsed query, then the rewrite takes it over and changes it in place.
// Parsing is most of the cost of a query seen for the first time. The zero value is ready; a nil *Parsed parses
// every time. Not safe for concurrent use: it lives as long as one request.
type Parsed struct {
	gate Gate
	part uint64
	// qs is a list: a request has a query or a few, and comparing the text costs less than hashing it. Past
	// parsedListMax queries (selectors, without -search.maxSelectorArgs) an index by text keeps a lookup short.
	qs    []parsedQuery
	index map[string]int
}

const parsedListMax = 16

type parsedQuery struct {
	q    string
	expr metricsql.Expr
	err  error
	// taken is set once the rewrite owns expr: it changes the tree, so a later reader parses again.
	taken bool
}

func (p *Parsed) find(q string) *parsedQuery {
	if p.index != nil {
		if i, ok := p.index[q]; ok && !p.qs[i].taken {
			return &p.qs[i]
		}
		return nil
	}
	for i := range p.qs {
		if pq := &p.qs[i]; !pq.taken && pq.q == q {
			return pq
		}
	}
	return nil
}

func (p *Parsed) add(pq parsedQuery) {
	p.qs = append(p.qs, pq)
	switch {
	case p.index != nil:
		p.index[pq.q] = len(p.qs) - 1
	case len(p.qs) > parsedListMax:
		p.index = make(map[string]int, 2*len(p.qs))
		for i := range p.qs {
			p.index[p.qs[i].q] = i // a later parse of the same text, after a take, is the one to find
		}
	}
}

// A Gate admits the parses of one request. A query no cache holds costs CPU in proportion to what it says (up to
// tens of milliseconds under the parse budgets), so the gateway bounds how many of them one team parses at once:
// one team's stream of new queries then cannot take the CPU every other team's requests need. Enter is called
// before each parse and returns at once when the request already holds its slot; its error refuses the request.
type Gate interface {
	Enter() error
}

// GateRefusal is the error of a parse the request's Gate did not admit. It says nothing of the query: callers
// answer the request with it and keep no outcome of the query for it.
type GateRefusal struct{ Err error }

func (e *GateRefusal) Error() string { return e.Err.Error() }
func (e *GateRefusal) Unwrap() error { return e.Err }

// IsGateRefusal says whether err is a GateRefusal.
func IsGateRefusal(err error) bool {
	var g *GateRefusal
	return errors.As(err, &g)
}

// SetGate makes every parse through p pass g first, and keeps what the request caches apart from the requests of
// other partitions (the caller's isolation units); Reset drops both.
func (p *Parsed) SetGate(g Gate, partition uint64) { p.gate, p.part = g, partition }

// Partition is the partition SetGate set (0 for a nil p): the caches of the query limits key by it too.
func (p *Parsed) Partition() uint64 {
	if p == nil {
		return 0
	}
	return p.part
}

// Parse returns q parsed with the guards every parse of a client's query needs (nesting depth, WITH expansion,
// parser panics), or why it does not parse. The caller must not change the expression: the rewrite takes it over.
func (p *Parsed) Parse(q string) (metricsql.Expr, error) {
	if p == nil {
		return parseMetricsQL(q, 0)
	}
	if pq := p.find(q); pq != nil {
		return pq.expr, pq.err
	}
	expr, err := p.parse(q)
	if !IsGateRefusal(err) {
		p.add(parsedQuery{q: q, expr: expr, err: err})
	}
	return expr, err
}

// take returns q parsed for the rewrite, which changes the expression: whoever asks for q afterwards parses again.
func (p *Parsed) take(q string) (metricsql.Expr, error) {
	if p == nil {
		return parseMetricsQL(q, 0)
	}
	if pq := p.find(q); pq != nil {
		pq.taken = true
		return pq.expr, pq.err
	}
	return p.parse(q)
}

// parse is ParseMetricsQL once the gate admits it, its dense regexps charged to p's partition.
func (p *Parsed) parse(q string) (metricsql.Expr, error) {
	if p.gate != nil {
		if err := p.gate.Enter(); err != nil {
			return nil, &GateRefusal{Err: err}
		}
	}
	return parseMetricsQL(q, p.part)
}

// Reset empties p for another request, keeping its room.
func (p *Parsed) Reset() {
	clear(p.qs) // the trees of the last request are garbage now
	p.qs, p.index, p.gate, p.part = p.qs[:0], nil, nil, 0
}

// ParseMetricsQL is metricsql.Parse with the guards every parse of a client's query needs: it refuses a query that
// nests too deeply or whose WITH templates expand too far before the parser spends the time, and turns a parser
// panic on hostile input into an error (the parser has BUG panics).
func ParseMetricsQL(q string) (expr metricsql.Expr, err error) { return parseMetricsQL(q, 0) }

// parseMetricsQL is ParseMetricsQL for a request of partition part (Parsed.SetGate), which the dense regexps of q
// are charged to (regexpmem.go).
func parseMetricsQL(q string, part uint64) (expr metricsql.Expr, err error) {
	if err := checkDepth(q); err != nil {
		return nil, err
	}
	// The checks below read the query's tokens, scanned once.
	var toks []string
	expanded := 0
	if containsFold(q, "with") {
		toks = tokenize(q)
		if expanded, err = checkWithBudget(toks); err != nil {
			return nil, err
		}
	}
	if mayCompileRegexp(q) {
		if toks == nil {
			toks = tokenize(q)
		}
		if err := checkRegexpBudget(q, toks, expanded, part); err != nil {
			return nil, err
		}
	}
	defer func() {
		if r := recover(); r != nil {
			expr, err = nil, fmt.Errorf("the parser failed: %v", r)
		}
	}()
	if expr, err = metricsql.Parse(q); err != nil {
		return nil, err
	}
	// WITH templates without args nest deeper than the text: each that wraps the one before in ten calls adds ten
	// levels where the text has one (an attacker's review: 6.2 KB of such templates made a query thousands of levels
	// deep, which every limit's walk gave up on, and which took v1.151 to 2.4 GB).
	if exprDepth(expr) > maxQueryDepth {
		return nil, errTooDeep
	}
	return expr, nil
}
