package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/vmgateway/vmgateway/internal/accesslog"
	"github.com/vmgateway/vmgateway/internal/flagutil"
)

var (
	accessLogPath            = flag.String("accessLog.path", "", "Where to write the access log, one JSON line per request whatever its outcome: stdout, stderr or a file, which is appended to and reopened on SIGHUP (log rotation). Empty: no access log. Lines are written at least every second. See docs/operations.md#access-log")
	accessLogSkipStatusCodes = flagutil.NewArray("accessLog.skipStatusCodes", "Response statuses whose requests get no access-log line, e.g. 200,204 to log only what went wrong")
	accessLogQueries         = flag.Bool("accessLog.queries", false, "Whether access-log lines carry the query text (the query arg, or the match[] args) in a query field. Off by default: queries can name what a team looks at, and they make lines long")
)

// accessLogConfig is the access log the -accessLog.* flags describe; accesslog.Open gives nil without a Path.
func accessLogConfig() (accesslog.Config, error) {
	var skip []int
	for _, s := range *accessLogSkipStatusCodes {
		c, err := strconv.Atoi(s)
		if err != nil {
			return accesslog.Config{}, fmt.Errorf("-accessLog.skipStatusCodes: %q is not an HTTP status code (want e.g. 200,204)", s)
		}
		skip = append(skip, c)
	}
	if *accessLogPath == "" && (len(skip) > 0 || *accessLogQueries) {
		return accesslog.Config{}, fmt.Errorf("-accessLog.skipStatusCodes and -accessLog.queries shape the access log, which is off: set -accessLog.path (stdout, stderr or a file)")
	}
	cfg := accesslog.Config{Path: *accessLogPath, SkipStatusCodes: skip, Queries: *accessLogQueries}
	return cfg, cfg.Validate()
}
