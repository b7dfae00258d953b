package gateway

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestDropQueryIDs(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		// vmselect v1.150's answer, byte for byte; v1.79.5's has no account_id and project_id.
		{"ids dropped",
			`{"status":"ok","data":[{"duration":"0.001s","id":"18EE39937732F47C","remote_addr":"127.0.0.1:5","account_id":15,"project_id":5,"query":"up","start":1,"end":2,"step":3},{"id":"18EE39937732F47D","query":"x"}]}`,
			`{"status":"ok","data":[{"duration":"0.001s","remote_addr":"127.0.0.1:5","account_id":15,"project_id":5,"query":"up","start":1,"end":2,"step":3},{"query":"x"}]}`},
		{"none running", `{"status":"ok","data":[]}`, `{"status":"ok","data":[]}`},
		{"none running, on 1.79.5", "", ""},
		{"an escaped key", `{"data":[{"\u0069d":"1","query":"up"}]}`, `{"data":[{"query":"up"}]}`},
		{"only an id", `{"data":[{"id":"1"}]}`, `{"data":[{}]}`},
		{"an error answer", `{"status":"error","error":"x"}`, `{"status":"error","error":"x"}`},
	} {
		got, err := dropQueryIDs([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: got %s, %v; want %s", tc.name, got, err, tc.want)
		}
	}
	for _, in := range []string{`{"data":{"id":1}}`, `{"data":["1"]}`, `[1]`, `{"data":[{"id":1}`} {
		if got, err := dropQueryIDs([]byte(in)); err == nil {
			t.Errorf("%s: got %s; want an error", in, got)
		}
	}
}

// FuzzDropQueryIDs: whatever vmselect answers, the client gets an error or a JSON object whose data entries (every
// data member, duplicates too) hold no id, however it is spelled.
func FuzzDropQueryIDs(f *testing.F) {
	for _, s := range []string{`{"status":"ok","data":[{"duration":"0.001s","id":"18EE39937732F47C","query":"up"}]}`,
		`{"data":[{"\u0069d":"1","id":"2"}],"data":[{"id":"3"}]}`, `{"data":[]}`, `{"data":[1]}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := dropQueryIDs(in)
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(in)) == 0 {
			// 1.79.5's answer when no query runs: nothing to drop.
			if !bytes.Equal(out, in) {
				t.Fatalf("%q became %q", in, out)
			}
			return
		}
		eachTopMember(t, in, out, func(key string, value json.RawMessage) {
			var entries []map[string]json.RawMessage
			if key != "data" {
				return
			}
			if err := json.Unmarshal(value, &entries); err != nil {
				t.Fatalf("%q became %q: data %s: %v", in, out, value, err)
			}
			for _, e := range entries {
				if _, ok := e["id"]; ok {
					t.Fatalf("%q became %q: an id passed", in, out)
				}
			}
		})
	})
}
