package main

import (
	"fmt"
	"io"
	"net/http"

	"github.com/vmgateway/vmgateway/internal/auth"
	"github.com/vmgateway/vmgateway/internal/confsource"
	"github.com/vmgateway/vmgateway/internal/httperr"
)

// explainPolicies tells, for `token explain`, how -auth.policyFile judges the token: which policy matched and,
// for each earlier one, which match entry failed. verifyErr is the gateway's verdict on the token: the policies
// are shown when they decided it, not for a token refused before them (401).
func explainPolicies(w io.Writer, v *auth.Verifier, token string, verifyErr error) {
	if verifyErr != nil && httperr.Status(verifyErr) != http.StatusForbidden {
		return
	}
	verdicts, consulted, err := v.ExplainPolicies(token)
	switch {
	case err != nil || *authPolicyFile == "":
		return
	case !consulted:
		fmt.Fprintf(w, "Access policies (%s): not consulted, the token has its own vm_access claim.\n", confsource.Show(*authPolicyFile))
		return
	}
	fmt.Fprintf(w, "Access policies (%s), in file order:\n", confsource.Show(*authPolicyFile))
	matched := false
	for _, pv := range verdicts {
		switch {
		case !pv.Matched:
			fmt.Fprintf(w, "  %-24s line %-5d does not match: %s\n", pv.Policy, pv.Line, pv.Failed)
		case pv.Unusable != "":
			matched = true
			fmt.Fprintf(w, "  %-24s line %-5d MATCHES, but cannot apply to this token (403): %s\n", pv.Policy, pv.Line, pv.Unusable)
		default:
			matched = true
			fmt.Fprintf(w, "  %-24s line %-5d MATCHES: the token gets this policy's vm_access\n", pv.Policy, pv.Line)
		}
	}
	if !matched {
		fmt.Fprintln(w, "  no policy matches: every request gets 403")
	}
}
