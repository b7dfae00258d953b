package server

import "github.com/VictoriaMetrics/metrics"

// maxConnsCeiling caps the automatic bound on client connections: past it, the goroutines and buffers of connections
// that send nothing would cost the gateway more memory than the requests it serves.
const maxConnsCeiling = 64 << 10

var (
	connsEvicted = metrics.NewCounter(`vmgateway_http_conns_evicted_total`)
	connsRefused = metrics.NewCounter(`vmgateway_http_conns_refused_total`)
)

// connBound is how many client connections each of n listeners may hold: max as given (negative: no bound), or, when
// 0, three quarters of the process's open-files limit (Go raises the soft limit to the hard one at start), the rest
// left for upstream connections, Redis and files, at most maxConnsCeiling, shared between the listeners.
func connBound(max, n int) int {
	switch {
	case max < 0 || n == 0:
		return 0
	case max == 0:
		max = min(openFilesLimit()*3/4, maxConnsCeiling)
		if max <= 0 {
			return 0 // the limit is not known here
		}
	}
	return (max + n - 1) / n
}
