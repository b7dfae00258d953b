package gateway

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/vmgateway/vmgateway/internal/httpsyntax"
)

// refuseUpgrade answers an upstream that switched protocols (101). The gateway joins no connections: after an
// upgrade (h2c, a websocket) the client's further requests would reach the upstream past every check of the
// pipeline. VictoriaMetrics upgrades nothing. Under httputil.ReverseProxy such an answer failed the same way, with
// the same errors first (the balancer's answer bodies were never writable, so it never switched either); the
// upstream's connection is closed here, where ReverseProxy left it open.
func (u *upstream) refuseUpgrade(rw http.ResponseWriter, req *http.Request, res *http.Response) {
	defer res.Body.Close()
	reqUpType := upgradeType(req.Header)
	resUpType := upgradeType(res.Header)
	if !isPrint(resUpType) {
		u.fail(rw, req, fmt.Errorf("backend tried to switch to invalid protocol %q", resUpType))
		return
	}
	if !httpsyntax.EqualFold(reqUpType, resUpType) {
		u.fail(rw, req, fmt.Errorf("backend tried to switch protocol %q when %q was requested", resUpType, reqUpType))
		return
	}
	u.fail(rw, req, errUpgrade)
}

var errUpgrade = errors.New("the upstream switched protocols (101); the gateway passes no protocol upgrade on, " +
	"since the upgraded connection would escape its checks")
