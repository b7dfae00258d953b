package auth

// Inspect judges what can be judged of a token without keys or a clock: its form, the JSON of its header and
// payload, and its vm_access claim. `vmgateway token explain` uses it when it is given no key, so that a token the
// gateway would refuse whatever the keys (a duplicate key, a null in vm_access, ...) is named as such. It returns
// nil or an *Error; nil says nothing about the signature or the time claims.
func Inspect(token string) error {
	t, err := splitToken(token)
	if err != nil {
		return err
	}
	c, err := parseClaims(t.payload)
	if err != nil {
		return err
	}
	if _, err := accessOf(c); err != nil {
		return err
	}
	return nil
}
