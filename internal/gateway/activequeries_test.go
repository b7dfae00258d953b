package gateway

import "testing"

func TestDropQueryIDs(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		// vmselect v1.150's answer, byte for byte; v1.79.5's has no account_id and project_id.
		{"ids dropped",
			`{"status":"ok","data":[{"duration":"0.001s","id":"18EE39937732F47C","remote_addr":"127.0.0.1:5","account_id":15,"project_id":5,"query":"up","start":1,"end":2,"step":3},{"id":"18EE39937732F47D","query":"x"}]}`,
			`{"status":"ok","data":[{"duration":"0.001s","remote_addr":"127.0.0.1:5","account_id":15,"project_id":5,"query":"up","start":1,"end":2,"step":3},{"query":"x"}]}`},
		{"none running", `{"status":"ok","data":[]}`, `{"status":"ok","data":[]}`},
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
