package server

import (
	"fmt"
	"net/http"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/httperr"
)

var headersTooLarge = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="headers_too_large"}`)

// net/http answers headers beyond its MaxHeaderBytes with a plain-text 431 before any handler runs. To answer
// -http.maxHeaderBytes with the JSON error every other refusal has, net/http gets a larger cap (goHeaderLimit)
// and the server checks the limit itself, naming the size it counted; headers beyond that larger cap meet net/http's
// own 431, which errconn.go rewrites into the same JSON shape on plain listeners (TLS ones keep net/http's text).

// goHeaderLimit is the cap handed to net/http for a -http.maxHeaderBytes limit: twice the limit, and at least
// net/http's own default of 1 MiB, so only clearly hostile requests meet net/http's plain answer.
func goHeaderLimit(limit int) int {
	if limit <= 0 {
		return 0
	}
	return max(2*limit, http.DefaultMaxHeaderBytes)
}

// headerSize is the size of the request line and headers as they came on the wire (HTTP/1.x), which is what
// net/http's MaxHeaderBytes counts.
func headerSize(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	if r.Host != "" {
		n += len("Host: ") + len(r.Host) + 2
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + 2
}

// checkHeaderSize answers 431 with a JSON error when the request's headers exceed -http.maxHeaderBytes.
func (s *Server) checkHeaderSize(w http.ResponseWriter, r *http.Request) bool {
	limit := s.cfg.MaxHeaderBytes
	if limit <= 0 {
		return true
	}
	if n := headerSize(r); n > limit {
		headersTooLarge.Inc()
		w.Header().Set("Connection", "close")
		httperr.WriteStatus(w, http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("the request line and headers are %d bytes; "+
			"at most %d are accepted (-http.maxHeaderBytes): send a shorter URL, fewer cookies or a smaller token", n, limit))
		return false
	}
	return true
}
