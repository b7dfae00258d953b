package gateway

import (
	"fmt"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

var panicsTotal = metrics.NewCounter(`vmgateway_panics_total`)

type apiCode struct {
	api  string
	code int
}

// Counters are looked up per request: a sync.Map keyed by a small struct avoids formatting metric names each time.
var (
	requestCounters sync.Map // apiCode → *metrics.Counter
	durations       sync.Map // api → *metrics.Histogram
)

func observe(api string, code int, start time.Time) {
	k := apiCode{api, code}
	c, ok := requestCounters.Load(k)
	if !ok {
		c, _ = requestCounters.LoadOrStore(k, metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_requests_total{api=%q,code="%d"}`, api, code)))
	}
	c.(*metrics.Counter).Inc()
	h, ok := durations.Load(api)
	if !ok {
		h, _ = durations.LoadOrStore(api, metrics.GetOrCreateHistogram(fmt.Sprintf(`vmgateway_request_duration_seconds{api=%q}`, api)))
	}
	h.(*metrics.Histogram).UpdateDuration(start)
}

func upstreamErrors(kind, reason string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`vmgateway_upstream_errors_total{upstream=%q,reason=%q}`, kind, reason))
}
