package auth

// PolicyVerdict is how one access policy judges a token, for `vmgateway token explain`.
type PolicyVerdict struct {
	Policy string
	// Line is where the policy starts in the policy file.
	Line int
	// Matched is set when every match entry holds; otherwise Failed says which entry does not and why, naming a
	// missing claim.
	Matched bool
	Failed  string
	// Unusable, for the policy that matched, says why it cannot apply to the token (a claim one of its templates
	// takes); empty when it can.
	Unusable string
}

// ExplainPolicies says how the policies in force judge token, whose claims are decoded but whose signature is NOT
// checked (Verify does that): for each policy in file order, up to and including the first that matches, whether
// it matches and if not which match entry fails. consulted is false when the policies do not decide the token's
// access: there are none, or the token has its own vm_access (without -auth.policy.ignoreTokenAccess).
func (v *Verifier) ExplainPolicies(token string) (verdicts []PolicyVerdict, consulted bool, err error) {
	s := v.policies
	if s == nil {
		return nil, false, nil
	}
	t, e := splitToken(token)
	if e != nil {
		return nil, false, e
	}
	c, e := parseClaims(t.payload)
	if e != nil {
		return nil, false, e
	}
	if c.all["vm_access"] != nil && !s.ignoreTokenAccess {
		return nil, false, nil
	}
	for _, p := range s.cur.Load().policies {
		pv := PolicyVerdict{Policy: p.name, Line: p.line}
		if m := p.failed(c.all); m != nil {
			pv.Failed = m.path.String() + ": " + m.why(c.all)
			verdicts = append(verdicts, pv)
			continue
		}
		pv.Matched = true
		if _, err := p.enforcer(c.all); err != nil {
			pv.Unusable = err.Error()
		}
		return append(verdicts, pv), true, nil
	}
	return verdicts, true, nil
}
