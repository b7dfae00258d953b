package gateway

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/httperr"
	"github.com/vmgateway/vmgateway/internal/httpsyntax"
)

// refuseUpgrade answers an upstream that switched protocols (101). The gateway joins no connections: after an
// upgrade (h2c, a websocket) the client's further requests would reach the upstream past every check of the
// pipeline. VictoriaMetrics upgrades nothing. Under httputil.ReverseProxy such an answer failed the same way, with
// the same errors first (the balancer's answer bodies were never writable, so it never switched either); the
// upstream's connection is closed here, where ReverseProxy left it open.
func (u *upstream) refuseUpgrade(rw http.ResponseWriter, req *http.Request, res *http.Response) {
	_ = res.Body.Close()
	countUnanswered(req, false)
	id := accesslog.From(rw).RequestID()
	reqUpType, resUpType := upgradeType(req.Header), upgradeType(res.Header)
	what := fmt.Sprintf("switched protocols (101) to %.64q", resUpType)
	switch {
	case !isPrint(resUpType):
		what = "switched protocols (101) to one whose name is not printable"
	case !httpsyntax.EqualFold(reqUpType, resUpType):
		what += fmt.Sprintf(", which the client did not ask for (it asked for %.64q)", reqUpType)
	}
	slog.Warn("upstream switched protocols", "upstream", u.name, "request_id", id, "requested", reqUpType, "answered", resUpType)
	u.failWith(rw, "upgrade", httperr.New(http.StatusBadGateway, logRef(fmt.Sprintf("the %s upstream %s; the gateway passes no "+
		"protocol upgrade on, since the upgraded connection would escape its checks", u.kind, what), id)))
}
