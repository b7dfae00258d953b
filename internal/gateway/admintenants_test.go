package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

func TestKeepTenant(t *testing.T) {
	own := tenant.ID{AccountID: 15, ProjectID: 5}
	for _, tc := range []struct{ name, in, want string }{
		// vmselect v1.150's answer, byte for byte.
		{"others dropped", `{"status":"success","data":["0:0","15:5","16:0"]}`, `{"status":"success","data":["15:5"]}`},
		{"own alone", `{"status":"success","data":["15:5"]}`, `{"status":"success","data":["15:5"]}`},
		{"own absent", `{"status":"success","data":["0:0","16:0"]}`, `{"status":"success","data":[]}`},
		{"empty", `{"status":"success","data":[]}`, `{"status":"success","data":[]}`},
		{"spaces and other members kept", `{ "data" : [ "15:50", "15:5" ] , "isPartial":false}`, `{ "data" : ["15:5"] , "isPartial":false}`},
		{"an escaped own tenant", `{"data":["15\u003a5"]}`, `{"data":["15\u003a5"]}`},
		{"own twice, once kept", `{"data":["15:5","15:5"]}`, `{"data":["15:5"]}`},
		{"a prefix is not the tenant", `{"data":["15:5 ","1:5","15"]}`, `{"data":[]}`},
		{"an error answer has no data", `{"status":"error","error":"x"}`, `{"status":"error","error":"x"}`},
	} {
		got, err := keepTenant(own)([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: got %s, %v; want %s", tc.name, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"data":["15:5",`, "not the JSON"},
		{`["15:5"]`, "not the JSON object"},
		{`{"data":{"15:5":1}}`, "not the list of tenants"},
		{`{"data":"15:5"}`, "not the list of tenants"},
		{`{"data":[15]}`, "holds 15, not a tenant"},
		{`{"data":["15:5",{"x":1}]}`, "not a tenant"},
		{`{"status":"success","data":["15:5"],"trace":{"message":"found 3 tenants"}}`, "carries a query trace"},
	} {
		got, err := keepTenant(own)([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %s, %v; want an error containing %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzKeepTenant: whatever vmselect answers, the client gets an error or a JSON object every data member of which
// (duplicates too, which JSON readers differ on) holds the token's own tenant at most, and no trace.
func FuzzKeepTenant(f *testing.F) {
	for _, s := range []string{`{"status":"success","data":["0:0","15:5","16:0"]}`, `{"data":["15:5"],"data":["16:0"]}`,
		`{"d\u0061ta":["16:0"]}`, `{"data":["15\u003a5",1]}`, `{"trace":{},"data":[]}`, `[]`, `{"data":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := keepTenant(tenant.ID{AccountID: 15, ProjectID: 5})(in)
		if err != nil {
			return
		}
		eachTopMember(t, in, out, func(key string, value json.RawMessage) {
			var list []string
			switch {
			case key == "trace":
				t.Fatalf("%q became %q: a trace passed", in, out)
			case key == "data" && (json.Unmarshal(value, &list) != nil || len(list) > 1 || len(list) == 1 && list[0] != "15:5"):
				t.Fatalf("%q became %q: data %s", in, out, value)
			}
		})
	})
}

// eachTopMember calls f with each member of out, a JSON object that a filter made of in, duplicates included, and
// fails the test when out is not one.
func eachTopMember(t *testing.T, in, out []byte, f func(key string, value json.RawMessage)) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%q became %q: not a JSON object", in, out)
	}
	for dec.More() {
		key, err := dec.Token()
		var value json.RawMessage
		if err == nil {
			err = dec.Decode(&value)
		}
		if err != nil {
			t.Fatalf("%q became %q: %v", in, out, err)
		}
		f(key.(string), value)
	}
}
