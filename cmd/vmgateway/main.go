// Command vmgateway is a gateway for VictoriaMetrics: it verifies each client's JWT, confines reads and writes to
// the token's tenant and series, rate-limits tenants, and proxies to single-node or cluster VictoriaMetrics.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmgateway/vmgateway/internal/flagutil"
	"github.com/vmgateway/vmgateway/internal/querylimits"
	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// version is set at build time: -ldflags "-X main.version=..."
var version = "dev"

var showVersion = flag.Bool("version", false, "Show vmgateway version")

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(runToken(os.Args[2:], os.Stdout, os.Stderr))
	}
	// The full usage is for -help only: after a bad flag, one line naming it is what the operator needs.
	flag.CommandLine.Usage = func() {}
	if err := flagutil.ParseCommandLine(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return
		}
		fmt.Fprintf(os.Stderr, "vmgateway: %s; see `vmgateway -help`\n", err)
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println("vmgateway", version)
		return
	}
	if err := setupLogger(); err != nil {
		fmt.Fprintf(os.Stderr, "vmgateway: %s\n", err)
		os.Exit(2)
	}
	if *authValidatePolicyFile {
		os.Exit(validatePolicyFile(os.Stdout, os.Stderr))
	}
	if *rateLimitValidateOnly {
		if err := limitfile.ValidateFile(*rateLimitConfig); err != nil {
			fmt.Fprintf(os.Stderr, "vmgateway: -ratelimit.config is invalid:\n%s\n", err)
			os.Exit(1)
		}
		fmt.Printf("-ratelimit.config=%s is valid\n", *rateLimitConfig)
		return
	}
	if *queryLimitsValidateOnly {
		if err := querylimits.ValidateFile(*queryLimitsConfig); err != nil {
			fmt.Fprintf(os.Stderr, "vmgateway: -querylimits.config is invalid:\n%s\n", err)
			os.Exit(1)
		}
		fmt.Printf("-querylimits.config=%s is valid\n", *queryLimitsConfig)
		return
	}
	warnings, err := flagsWithoutEffect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmgateway: cannot start: %s\n", err)
		os.Exit(1)
	}
	for _, w := range warnings {
		slog.Warn(w)
	}
	app, err := newApp()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmgateway: cannot start: %s\n", err)
		os.Exit(1)
	}
	startGCFloor(*gcMinHeapGrowth)
	startAdaptiveProcs()
	if err := app.start(); err != nil {
		fmt.Fprintf(os.Stderr, "vmgateway: cannot start: %s\n", err)
		os.Exit(1)
	}
	slog.Info("vmgateway started", "version", version)
	app.logSummary()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for s := range sig {
		if s == syscall.SIGHUP {
			app.reopenAccessLog()
			app.reloader.sighup()
			continue
		}
		slog.Info("received signal, shutting down", "signal", s.String())
		break
	}
	if err := app.stop(); err != nil {
		slog.Error("shutdown", "err", err)
		os.Exit(1)
	}
	slog.Info("vmgateway stopped")
}
