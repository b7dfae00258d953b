// Package h1 is the gateway's HTTP/1.1 server: it reads requests from client connections, hands each to an
// http.Handler as a real *http.Request with an http.ResponseWriter, and writes the answers.
//
// It is hand-written rather than net/http's server or fasthttp's:
//   - net/http's server pays, on every request, for what the gateway does not use: HTTP/2 plumbing, textproto's
//     general header reader, a response writer layered over two buffers, a context and a goroutine per request
//     whether or not anything waits on them. Under the read bench that is about a quarter of the gateway's CPU
//     outside its own handler.
//   - fasthttp cannot tell a handler that its client went away (there is no per-request cancellation, and the
//     gateway cancels the upstream query when the client leaves), and its request and response types would run
//     through the whole pipeline instead of net/http's.
//
// So the pipeline keeps its shape (an http.Handler chain) and this package does only HTTP/1.x, strictly. Parsing is
// the security boundary: it accepts what net/http's server accepts, byte for byte (FuzzParseRequest checks it
// against http.ReadRequest plus the checks net/http's server adds), and is stricter only where documented:
//   - "PRI * HTTP/2.0", which net/http hands to the handler for an HTTP/2 upgrade, gets a 505 naming HTTP/1.1: the
//     gateway speaks HTTP/1.1 only, and TLS listeners offer only "http/1.1" by ALPN so HTTP/2 clients fall back.
//
// The trailer section of a chunked body is read into Request.Trailer as net/http reads it; the gateway never
// forwards request trailers (internal/gateway/forward.go), since they come after every check of the head.
//
// Every answer the server gives itself (a malformed request, headers beyond MaxHeaderBytes, an unknown Expect, an
// unsupported version or transfer encoding) is the gateway's JSON error (internal/httperr), on plain and TLS
// listeners alike, and is reported to Server.Rejected, which counts and logs it and gives it a request id.
//
// Differences from net/http's server a handler could notice: no Content-Type sniffing (every handler sets its
// own), no Hijack, no HTTP/2. A client going away is seen by one epoll set for all connections (watch_linux.go:
// the peer's FIN or reset) rather than by a read per request, which measured half the server's CPU per request;
// like net/http's read, it takes a client that half-closes its side after its last request for gone, but not while
// bytes of a further request are waiting (unread in the socket or the reader; under TLS only the reader's, since a
// closing client's close_notify is unread bytes too). Unlike net/http's, it does not wait for the body to be read:
// a client that leaves with all of a Content-Length body sent (or cut short) cancels its request at once, so a
// handler that waits before it reads (a write waiting for a slot) learns it (a chunked body is still seen once
// read). Elsewhere the background read of net/http is kept, from the body's end.
//
// Per request it allocates one string backing the whole head (every method, target, name and value points into
// it), one object holding the *http.Request, its URL, the response writer and the body reader, and the cancellable
// context (two): 4 allocations, 5 for a target whose path net/url must unescape; BenchmarkServe counts 9 per
// request with its handler's 5, where net/http's server makes 27. Its bufio reader and writer come from pools; a
// connection keeps them while it idles, since handing them back between requests would cost more than the memory
// (4 KiB each) it saves.
//
// A connection also keeps, for its next request, the request's header map with the array behind its values and
// the answer's header map, emptied (up to 32 fields; larger ones are dropped). So a handler must not use
// Request.Header, ResponseWriter.Header() or a value slice of either once it has returned, nor leave a goroutine
// that does: copy what it keeps (the strings themselves are never reused). The gateway keeps none: no goroutine
// of a request outlives its handler, and the upstream client is done with the request when it returns.
//
// A kept-alive connection renews its idle read deadline only once it is stale by IdleTimeout/16 (so the wait for
// the next request ends between IdleTimeout and 1/16 more), and sets ReadHeaderTimeout's deadline only for a head
// that is not in its reader in full: in the steady state of a busy connection no deadline changes per request.
//
// An answer goes out in one write when it fits the 4 KiB writer; on plain TCP a larger body write goes out with
// what the writer holds (head, chunk size line) and a chunk's closing CRLF in one writev (writev.go), not as a
// full buffer, the rest and a 2-byte CRLF at the next flush: 40% fewer writes in TestLargeWrites.
package h1
