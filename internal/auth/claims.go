package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/tenant"
)

// VMAccess is the vm_access claim. It marshals to the shape the enterprise vmgateway documents
// ({"tenant_id":{"account_id":..,"project_id":..},"extra_labels":{..},"extra_filters":[..],"mode":..}) and
// unmarshals from that shape or from vmauth's (metrics_account_id, metrics_project_id, metrics_extra_labels as
// "name=value", metrics_extra_filters), given as an object or as a JSON string holding one.
type VMAccess struct {
	Tenant       tenant.ID
	ExtraLabels  map[string]string
	ExtraFilters []string
	Mode         Mode
}

// MarshalJSON writes the enterprise vmgateway shape; empty labels and filters are left out. A VMAccess without a
// Mode is an error, not a full-mode claim.
func (a VMAccess) MarshalJSON() ([]byte, error) {
	mode, ok := a.Mode.Wire()
	if !ok {
		return nil, fmt.Errorf("vm_access: the mode %d is not ModeFull, ModeRead or ModeWrite", a.Mode)
	}
	type tenantID struct {
		AccountID uint32 `json:"account_id"`
		ProjectID uint32 `json:"project_id"`
	}
	return json.Marshal(struct {
		TenantID     tenantID          `json:"tenant_id"`
		ExtraLabels  map[string]string `json:"extra_labels,omitempty"`
		ExtraFilters []string          `json:"extra_filters,omitempty"`
		Mode         uint32            `json:"mode"`
	}{tenantID{a.Tenant.AccountID, a.Tenant.ProjectID}, a.ExtraLabels, a.ExtraFilters, mode})
}

// MarshalVMAuth writes vmauth's shape (metrics_account_id, metrics_project_id, metrics_extra_labels as sorted
// "name=value", metrics_extra_filters, and mode unless full), which UnmarshalJSON reads too: one token serves
// vmauth and the gateway. A VMAccess without a Mode is an error, as in MarshalJSON: left out, the mode reads as full.
func (a VMAccess) MarshalVMAuth() ([]byte, error) {
	mode, ok := a.Mode.Wire()
	if !ok {
		return nil, fmt.Errorf("vm_access: the mode %d is not ModeFull, ModeRead or ModeWrite", a.Mode)
	}
	m := map[string]any{"metrics_account_id": a.Tenant.AccountID, "metrics_project_id": a.Tenant.ProjectID}
	if len(a.ExtraLabels) > 0 {
		ls := make([]string, 0, len(a.ExtraLabels))
		for _, name := range slices.Sorted(maps.Keys(a.ExtraLabels)) {
			ls = append(ls, name+"="+a.ExtraLabels[name])
		}
		m["metrics_extra_labels"] = ls
	}
	if len(a.ExtraFilters) > 0 {
		m["metrics_extra_filters"] = a.ExtraFilters
	}
	if mode != 0 {
		m["mode"] = mode
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads either shape strictly: unknown fields, wrong types, numbers out of range and a mix of both
// shapes are errors, because a misspelt restriction must not silently grant more than the issuer meant.
func (a *VMAccess) UnmarshalJSON(b []byte) error {
	v, err := decodeJSON(b)
	if err != nil {
		return err
	}
	va, e := vmAccessFrom(v)
	if e != nil {
		return e
	}
	*a = va
	return nil
}

// vmauthLogsFields belong to VictoriaLogs in vmauth tokens; a metrics gateway has no use for them.
var vmauthLogsFields = map[string]bool{
	"logs_account_id": true, "logs_project_id": true, "logs_extra_filters": true, "logs_extra_stream_filters": true,
}

// vmAccessFrom reads a vm_access value decoded with json.Number numbers. A missing mode is full, as the wire format
// says; every other restriction the claim lacks is simply not there, which is why the shapes that lift one without
// saying so (null, an empty list or object, a claim that only speaks about logs) are refused with reasons of their
// own.
func vmAccessFrom(v any) (VMAccess, *Error) {
	return vmAccessFields(v)
}

func vmAccessFields(v any) (VMAccess, *Error) {
	a := VMAccess{Mode: ModeFull}
	if s, ok := v.(string); ok {
		inner, err := decodeJSON([]byte(s))
		if dup, ok := err.(*duplicateKeyError); ok {
			return a, duplicateKey("vm_access (a JSON string)", dup)
		}
		if err != nil {
			return a, newError(reasonBadVMAccess, "vm_access is a string that is not JSON: %s", err)
		}
		if _, ok := inner.(map[string]any); !ok {
			return a, newError(reasonBadVMAccess, "vm_access is a string holding %s; want a JSON object", jsonKind(inner))
		}
		v = inner
	}
	m, ok := v.(map[string]any)
	if !ok {
		return a, newError(reasonBadVMAccess, "vm_access must be a JSON object or a string holding one, got %s", jsonKind(v))
	}
	if path := nullPath(m, "vm_access"); path != "" {
		return a, newError(reasonNullInVMAccess, "%s is null; null is refused anywhere inside vm_access because it "+
			"reads as absent, and an absent extra_labels, extra_filters or mode means unrestricted or full: leave the "+
			"field out, or give it a value", path)
	}
	// gatewayField and vmauthField tell the shapes apart; metricsSaid is whether the claim says anything about
	// metrics beyond the mode (a tenant, or labels or filters); logsField is a logs_* field, if any.
	var gatewayField, vmauthField, logsField string
	var metricsSaid bool
	for _, name := range slices.Sorted(maps.Keys(m)) {
		val := m[name]
		var err error
		switch name {
		case "tenant_id":
			gatewayField, metricsSaid = name, true
			a.Tenant, err = tenantFrom(val)
		case "extra_labels":
			gatewayField = name
			a.ExtraLabels, err = labelMapFrom(val)
			metricsSaid = metricsSaid || len(a.ExtraLabels) > 0
		case "extra_filters":
			gatewayField = name
			a.ExtraFilters, err = stringsFrom(val)
			metricsSaid = metricsSaid || len(a.ExtraFilters) > 0
		case "mode":
			var n uint32
			if n, err = uint32From(val); err == nil {
				var ok bool
				if a.Mode, ok = modeFromWire(n); !ok {
					err = fmt.Errorf("must be 0 (full), 1 (read) or 2 (write), got %d", n)
				}
			}
		case "metrics_account_id":
			vmauthField, metricsSaid = name, true
			a.Tenant.AccountID, err = uint32From(val)
		case "metrics_project_id":
			vmauthField, metricsSaid = name, true
			a.Tenant.ProjectID, err = uint32From(val)
		case "metrics_extra_labels":
			vmauthField = name
			a.ExtraLabels, err = labelListFrom(val)
			metricsSaid = metricsSaid || len(a.ExtraLabels) > 0
		case "metrics_extra_filters":
			vmauthField = name
			a.ExtraFilters, err = stringsFrom(val)
			metricsSaid = metricsSaid || len(a.ExtraFilters) > 0
		default:
			if vmauthLogsFields[name] {
				logsField = name
			} else {
				err = errors.New("unknown field; vm_access has tenant_id, extra_labels, extra_filters and mode " +
					"(or vmauth's metrics_account_id, metrics_project_id, metrics_extra_labels, metrics_extra_filters)")
			}
		}
		if err != nil {
			return VMAccess{}, newError(reasonBadVMAccess, "vm_access.%s: %s", name, err)
		}
		if emptyRestriction(name, val) {
			// An identity provider's mapper emits [] or {} for a user without the attribute it maps (a user in no
			// team): read as absent, that user would see every team's series.
			return VMAccess{}, newError(reasonEmptyRestriction, "vm_access.%s is empty; an empty restriction reads "+
				"as none, which would give every series of the tenant: leave the field out for a token meant to see "+
				"all of them, or give it a value", name)
		}
	}
	if gatewayField != "" && vmauthField != "" {
		return VMAccess{}, newError(reasonBadVMAccess, "vm_access mixes the vmgateway field %s and the vmauth field %s; use one shape", gatewayField, vmauthField)
	}
	if logsField != "" && !metricsSaid {
		// vmauth reads logs_* for VictoriaLogs and metrics_* for VictoriaMetrics: a claim written for logs alone
		// would be a token for every series of tenant 0:0 here.
		return VMAccess{}, newError(reasonLogsOnly, "vm_access has the VictoriaLogs field %s but no metrics_account_id, "+
			"metrics_project_id, metrics_extra_labels or metrics_extra_filters: it restricts only logs and would be "+
			"unrestricted for metrics; give the metrics restrictions too, or do not send this token to the metrics gateway", logsField)
	}
	return a, nil
}

// emptyRestriction says whether val, the vm_access field name, is a restriction of series given empty.
func emptyRestriction(name string, val any) bool {
	switch name {
	case "extra_labels", "extra_filters", "metrics_extra_labels", "metrics_extra_filters":
	default:
		return false
	}
	switch v := val.(type) {
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}

// nullPath returns the path of the first null inside v (keys in sorted order, so the message is stable), or "". It
// allocates only when there is a null to name.
func nullPath(v any, path string) string {
	if !hasNull(v) {
		return ""
	}
	switch v := v.(type) {
	case nil:
		return path
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if p := nullPath(v[k], path+"."+k); p != "" {
				return p
			}
		}
	case []any:
		for i, e := range v {
			if p := nullPath(e, path+"["+strconv.Itoa(i)+"]"); p != "" {
				return p
			}
		}
	}
	return ""
}

func hasNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, e := range v {
			if hasNull(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasNull(e) {
				return true
			}
		}
	}
	return false
}

func tenantFrom(v any) (tenant.ID, error) {
	var t tenant.ID
	m, ok := v.(map[string]any)
	if !ok {
		return t, fmt.Errorf("must be an object such as {\"account_id\":1,\"project_id\":2}, got %s", jsonKind(v))
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		var err error
		switch name {
		case "account_id":
			t.AccountID, err = uint32From(m[name])
		case "project_id":
			t.ProjectID, err = uint32From(m[name])
		default:
			err = errors.New("unknown field; tenant_id has account_id and project_id")
		}
		if err != nil {
			return t, fmt.Errorf("%s: %w", name, err)
		}
	}
	return t, nil
}

// uint32From accepts only a JSON integer in [0, 4294967295]: "1.0", "1e3", "-1" and "\"1\"" are errors.
func uint32From(v any) (uint32, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("must be an integer in [0, 4294967295], got %s", jsonKind(v))
	}
	s := n.String()
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("must be an integer in [0, 4294967295], got %s", truncate(s))
		}
	}
	u, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("must be an integer in [0, 4294967295], got %s", truncate(s))
	}
	return uint32(u), nil
}

func labelMapFrom(v any) (map[string]string, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("must be an object of label names to values, got %s", jsonKind(v))
	}
	labels := make(map[string]string, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		val := m[name]
		s, ok := val.(string)
		if !ok {
			return nil, fmt.Errorf("%s: the value must be a string, got %s", quote(name), jsonKind(val))
		}
		labels[name] = s
	}
	return labels, nil
}

// labelListFrom reads vmauth's ["name=value", ...]; the value may itself contain '='.
func labelListFrom(v any) (map[string]string, error) {
	list, err := stringsFrom(v)
	if err != nil {
		return nil, err
	}
	labels := make(map[string]string, len(list))
	for _, s := range list {
		name, value, ok := strings.Cut(s, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s: want name=value", quote(s))
		}
		if _, dup := labels[name]; dup {
			return nil, fmt.Errorf("the label %s is given twice", quote(name))
		}
		labels[name] = value
	}
	return labels, nil
}

func stringsFrom(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("must be an array of strings, got %s", jsonKind(v))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("element %d must be a string, got %s", i, jsonKind(e))
		}
		out[i] = s
	}
	return out, nil
}

// enforcer builds the Enforcer of the claim's labels (sorted by name) and filters; nil when there are none.
func (a VMAccess) enforcer() (*enforce.Enforcer, error) {
	if len(a.ExtraLabels) == 0 && len(a.ExtraFilters) == 0 {
		return nil, nil
	}
	labels := make([]enforce.Label, 0, len(a.ExtraLabels))
	for _, name := range slices.Sorted(maps.Keys(a.ExtraLabels)) {
		labels = append(labels, enforce.Label{Name: name, Value: a.ExtraLabels[name]})
	}
	return enforce.New(labels, a.ExtraFilters)
}

// accessOf reads the vm_access claim.
func accessOf(c *claims) (*Access, *Error) {
	raw := c.all["vm_access"]
	if raw == nil {
		return nil, newError(reasonMissingVMAccess, "vm_access claim missing")
	}
	va, e := vmAccessFrom(raw)
	if e != nil {
		return nil, e
	}
	enf, e := va.checkedEnforcer()
	if e != nil {
		return nil, e
	}
	return &Access{Tenant: va.Tenant, Mode: va.Mode, Enforcer: enf, Subject: c.sub, ExpiresAt: c.exp, Claims: c.all}, nil
}

// checkedEnforcer is enforcer with the refusal the verifier answers a claim it cannot enforce with.
func (a VMAccess) checkedEnforcer() (*enforce.Enforcer, *Error) {
	enf, err := a.enforcer()
	if errors.Is(err, enforce.ErrMatchesEmpty) {
		return nil, newError(reasonFilterMatchesEmpty, "vm_access: %s", err)
	}
	if err != nil {
		return nil, newError(reasonBadVMAccess, "vm_access: %s", err)
	}
	return enf, nil
}

// Validate reports whether the verifier would accept a as a token's vm_access: a valid Mode, and labels and
// filters it can enforce. The error is an *Error with the reason the verifier would count the token under.
// `vmgateway token mint` checks a claim with it before signing.
func (a VMAccess) Validate() error {
	if _, ok := a.Mode.Wire(); !ok {
		return newError(reasonBadVMAccess, "vm_access: the mode %d is not full, read or write", a.Mode)
	}
	if _, e := a.checkedEnforcer(); e != nil {
		return e
	}
	return nil
}

// claims are a token's payload: the registered claims the gateway checks and all claims for Access.Claims.
type claims struct {
	all           map[string]any
	exp, nbf, iat time.Time // zero when absent
	iss, sub      string
	aud           []string
}

// parseClaims decodes a token payload strictly: registered claims of the wrong type are errors, not ignored.
func parseClaims(payload []byte) (*claims, *Error) {
	all, err := decodePayload(payload)
	if err != nil {
		return nil, err
	}
	return claimsOf(all)
}

// decodePayload decodes a token payload: one JSON object, no key given twice, numbers as json.Number.
func decodePayload(payload []byte) (map[string]any, *Error) {
	v, err := decodeJSON(payload)
	if dup, ok := err.(*duplicateKeyError); ok {
		return nil, duplicateKey("the token payload", dup)
	}
	if err != nil {
		return nil, newError(reasonMalformed, "the token payload is not JSON: %s", err)
	}
	all, ok := v.(map[string]any)
	if !ok {
		return nil, newError(reasonMalformed, "the token payload must be a JSON object, got %s", jsonKind(v))
	}
	// The gateway reads its claims by their exact names; a reader that decodes them into a struct (Go's
	// encoding/json, as vmauth may) matches them without regard to case, and would read VM_ACCESS as vm_access.
	for k := range all {
		for _, name := range readClaims {
			if k != name && strings.EqualFold(k, name) {
				return nil, newError(reasonMalformed, "the token payload has the claim %s; claim names are case-sensitive, and "+
					"readers that match %s without regard to case would read it as that claim", quote(k), name)
			}
		}
	}
	return all, nil
}

// readClaims are the claims the gateway reads by name.
var readClaims = []string{"vm_access", "exp", "nbf", "iat", "iss", "aud", "sub"}

// claimsOf reads the registered claims of a decoded payload.
func claimsOf(all map[string]any) (*claims, *Error) {
	var err error
	c := &claims{all: all}
	if c.exp, err = numericDate(all, "exp"); err != nil {
		return nil, newError(reasonMalformed, "%s", err)
	}
	if c.exp.IsZero() {
		return nil, newError(reasonMissingExp, "the token has no exp claim; tokens without an expiry are not accepted")
	}
	if c.nbf, err = numericDate(all, "nbf"); err != nil {
		return nil, newError(reasonMalformed, "%s", err)
	}
	if c.iat, err = numericDate(all, "iat"); err != nil {
		return nil, newError(reasonMalformed, "%s", err)
	}
	if c.iss, err = stringClaim(all, "iss"); err != nil {
		return nil, newError(reasonMalformed, "%s", err)
	}
	if c.sub, err = stringClaim(all, "sub"); err != nil {
		return nil, newError(reasonMalformed, "%s", err)
	}
	switch aud := all["aud"].(type) {
	case nil:
	case string:
		c.aud = []string{aud}
	default:
		if c.aud, err = stringsFrom(aud); err != nil {
			return nil, newError(reasonMalformed, "the aud claim must be a string or an array of strings: %s", err)
		}
	}
	return c, nil
}

func stringClaim(all map[string]any, name string) (string, error) {
	switch v := all[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("the %s claim must be a string, got %s", name, jsonKind(v))
	}
}

// maxNumericDate bounds exp, nbf and iat to about year 36800, far inside time.Time and int64 nanoseconds math.
const maxNumericDate = 1 << 40

// numericDate reads an RFC 7519 NumericDate: seconds since the epoch, possibly fractional. Zero time means absent.
func numericDate(all map[string]any, name string) (time.Time, error) {
	v, ok := all[name]
	if !ok || v == nil {
		return time.Time{}, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("the %s claim must be a number of seconds since 1970, got %s", name, jsonKind(v))
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || math.Abs(f) > maxNumericDate {
		return time.Time{}, fmt.Errorf("the %s claim %s is out of range", name, truncate(n.String()))
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

func jsonKind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "the number " + truncate(v.String())
	case string:
		return "the string " + quote(v)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}
