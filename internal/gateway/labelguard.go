package gateway

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/labelguard"
	"github.com/vmgateway/vmgateway/internal/route"
)

var (
	droppedOverLimit  = metrics.NewCounter(`vmgateway_write_series_dropped_total{reason="too_many_labels"}`)
	droppedUnparsable = metrics.NewCounter(`vmgateway_write_series_dropped_total{reason="unparsable"}`)
	// lastDropLog keeps the log of dropped series to one line per dropLogEvery: a client can send millions.
	lastDropLog atomic.Int64
)

const dropLogEvery = 10 * time.Second

// guardLabels puts the label guard on the body of a write through a token with extra labels, while a write
// backend truncates series over its label limit: without it, a series that fills the limit itself would lose the
// token's labels there (labelguard). r's body is already the idle-timed one (streamWriteBody). A request the guard
// refuses outright is answered with the error and nothing is forwarded; the returned func gives back the memory
// the guard held, once the request is done.
func (g *Gateway) guardLabels(r *http.Request, rt route.Route, a *auth.Access) (func(), error) {
	if g.labelLimit == nil || rt.Args != route.WriteArgs || a.Enforcer.NumLabels() == 0 {
		return func() {}, nil
	}
	limit, err := g.labelLimit(r.Context())
	if he := (*httperr.Error)(nil); errors.As(err, &he) {
		return nil, he // the check's own refusal (a write backend that sorts labels)
	}
	if err != nil {
		return nil, httperr.New(http.StatusServiceUnavailable, fmt.Sprintf("the gateway has not learned yet whether the write backend "+
			"truncates series over its label limit, which decides how it checks writes through this token: %s; send the request again", err))
	}
	if limit == 0 {
		return func() {}, nil
	}
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	c := labelguard.Check{Max: limit, Drop: func(reason string, series []byte) {
		logDrop(a, limit, reason, series)
	}, Budget: g.labelBudget, Unit: unitOf(a.Tenant, a.Enforcer)}
	nb, n, err := c.Body(rt.API, r.URL.Query(), rt.PathLabels(), r.Header, body, r.ContentLength)
	if err != nil {
		if stalled := stalledBody(r); stalled != nil {
			return nil, stalled
		}
		if he := (*httperr.Error)(nil); errors.As(err, &he) {
			return nil, he
		}
		return nil, httperr.New(http.StatusBadRequest, fmt.Sprintf("cannot read the request body: %s", err))
	}
	ib, _ := r.Context().Value(idleBodyKey{}).(*idleBody)
	r.Body = &guardedBody{guard: nb, body: body, idle: ib}
	r.ContentLength = n
	return func() { _ = nb.Close() }, nil
}

// guardedBody is what the upstream client reads of a guarded write: an error of the guard's own, found while the
// body streams, ends the upstream request unfinished and is the client's answer.
type guardedBody struct {
	guard io.ReadCloser
	body  io.Closer
	idle  *idleBody
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.guard.Read(p)
	if he := (*httperr.Error)(nil); err != nil && b.idle != nil && errors.As(err, &he) {
		b.idle.refuse(he)
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.body.Close() }

func logDrop(a *auth.Access, limit int, reason string, series []byte) {
	if reason == "too_many_labels" {
		droppedOverLimit.Inc()
	} else {
		droppedUnparsable.Inc()
	}
	now, last := time.Now().UnixNano(), lastDropLog.Load()
	if now-last < int64(dropLogEvery) || !lastDropLog.CompareAndSwap(last, now) {
		return
	}
	const most = 512
	s := series
	if len(s) > most {
		s = s[:most]
	}
	slog.Warn("dropped a series the write backend would have stored without the token's extra labels "+
		"(it truncates series over its -maxLabelsPerTimeseries; VictoriaMetrics v1.108.0 and later drop them as the gateway does); "+
		"more are counted in vmgateway_write_series_dropped_total, logged once per "+dropLogEvery.String(),
		"reason", reason, "tenant", a.Tenant.String(), "subject", a.Subject, "maxLabelsPerTimeseries", limit,
		"token_labels", a.Enforcer.NumLabels(), "series", string(s))
}
