package server

import (
	"fmt"
	"net/http"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/h1"
	"github.com/vmgateway/vmgateway/internal/httperr"
)

var (
	headersTooLarge   = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="headers_too_large"}`)
	malformedRequests = metrics.NewCounter(`vmgateway_requests_rejected_total{reason="malformed_request"}`)
)

// The HTTP server (internal/h1) stops reading a head at a hard cap (goHeaderLimit) and answers 431 itself. The
// -http.maxHeaderBytes limit is checked here, on the parsed request, below that cap: such a request goes through
// the access log and gets its request id like any other refusal, and its message names the size counted.

// goHeaderLimit is the server's hard cap for a -http.maxHeaderBytes limit: twice the limit, and at least
// net/http's default of 1 MiB, so only clearly hostile requests meet the server's own answer.
func goHeaderLimit(limit int) int {
	if limit <= 0 {
		return 0
	}
	return max(2*limit, http.DefaultMaxHeaderBytes)
}

// rejected counts a request the HTTP server refused before any handler (a malformed head, a head beyond its cap,
// an unknown Expect), words the client's message, gives the request its id and writes its access-log line, whose
// reason leaves out the pieces of the request the message quotes.
func (s *Server) rejected(rej *h1.Rejection) ([]byte, string) {
	msg, logMsg := rej.Msg, rej.LogMsg
	if rej.Status == http.StatusRequestHeaderFieldsTooLarge {
		headersTooLarge.Inc()
		limit := s.cfg.MaxHeaderBytes
		if limit <= 0 {
			limit = http.DefaultMaxHeaderBytes
		}
		msg = fmt.Sprintf("the request line and headers are larger than %d bytes; at most %d are accepted (-http.maxHeaderBytes): "+
			"send a shorter URL, fewer cookies or a smaller token", max(goHeaderLimit(s.cfg.MaxHeaderBytes), http.DefaultMaxHeaderBytes), limit)
		logMsg = msg
	} else {
		malformedRequests.Inc()
	}
	e := accesslog.Refusal(s.cfg.AccessLog, rej.RemoteAddr, rej.Method, rej.Path)
	body := httperr.JSON(rej.Status, msg, e.RequestID())
	e.Refused(rej.Status, logMsg, len(body))
	return body, e.RequestID()
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
