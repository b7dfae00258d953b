package enforce

import "testing"

func TestAbsentLabels(t *testing.T) {
	two := mustNew(t, []Label{{"team", "dev"}}, []string{`{env="prod",tier="gold"}`, `{env="prod",region="eu"}`})
	sel := func(x string) string {
		return `union(nothing{` + x + `team="dev",env="prod",tier="gold",Env=""}, nothing{` + x + `team="dev",env="prod",region="eu",Env=""})`
	}
	for _, tc := range []struct {
		e       *Enforcer
		in, out string
	}{
		// One branch: VictoriaMetrics takes the labels from the selector itself.
		{devOnly(t), `absent(nothing{job="x"})`, `absent(nothing{job="x",team="dev"})`},
		// Several: the equality filters every branch holds, the client's and the token's; no regexp, negative,
		// empty or __name__ filter.
		{two, `absent(nothing{job="x"})`, `label_set(absent(` + sel(`job="x",`) + `), "job", "x", "team", "dev", "env", "prod")`},
		{two, `absent(nothing{job=~"x",a!="b",c="",__name__="nothing"})`, `label_set(absent(` + sel(`job=~"x",a!="b",c="",`) + `), "team", "dev", "env", "prod")`},
		{two, `absent(nothing{env="stage"})`, `label_set(absent(` + sel(`env="stage",`) + `), "team", "dev")`},
		{two, `absent_over_time(nothing{job="x"}[5m] offset 1h)`, `label_set((vector(1) and on() absent_over_time(nothing{job="x",team="dev",env="prod",tier="gold",Env=""}[5m] offset 1h)) ` +
			`and on() absent_over_time(nothing{job="x",team="dev",env="prod",region="eu",Env=""}[5m] offset 1h), "job", "x", "team", "dev", "env", "prod")`},
		{two, `absent_over_time(nothing{job="x"}[5m:1m])`, `label_set(absent_over_time(` + sel(`job="x",`) + `[5m:1m]), "job", "x", "team", "dev", "env", "prod")`},
		// The client's own branches: only what they share.
		{two, `absent(nothing{job="x" or job="y"})`, `label_set(absent(union(nothing{job="x",team="dev",env="prod",tier="gold",Env=""}, nothing{job="x",team="dev",env="prod",region="eu",Env=""}, ` +
			`nothing{job="y",team="dev",env="prod",tier="gold",Env=""}, nothing{job="y",team="dev",env="prod",region="eu",Env=""})), "team", "dev", "env", "prod")`},
		// Deeper in the query, and a WITH template's one selector at two places.
		{two, `sum(absent(nothing)) + absent(nothing)`, `sum(label_set(absent(` + sel(``) + `), "team", "dev", "env", "prod")) + label_set(absent(` + sel(``) + `), "team", "dev", "env", "prod")`},
		{two, `with (x = nothing{job="x"}) absent(x) or x`, `label_set(absent(` + sel(`job="x",`) + `), "job", "x", "team", "dev", "env", "prod") or ` + sel(`job="x",`)},
		{two, `max_over_time(absent(nothing)[5m:1m])`, `max_over_time(label_set(absent(` + sel(``) + `), "team", "dev", "env", "prod")[5m:1m])`},
		// VictoriaMetrics gives no labels to absent over anything but a selector.
		{two, `absent(nothing offset 1h)`, `absent(union(nothing{team="dev",env="prod",tier="gold",Env=""} offset 1h, nothing{team="dev",env="prod",region="eu",Env=""} offset 1h))`},
		{two, `absent(sum(nothing))`, `absent(sum(` + sel(``) + `))`},
		// A label value that must be quoted.
		{two, `absent(nothing{job="a\"b\\c\n"})`, `label_set(absent(` + sel(`job="a\"b\\c\n",`) + `), "job", "a\"b\\c\n", "team", "dev", "env", "prod")`},
	} {
		got, err := tc.e.Query(tc.in)
		if err != nil {
			t.Errorf("Query(%q) with %s: %s", tc.in, tc.e, err)
			continue
		}
		if got != tc.out {
			t.Errorf("Query(%q) with %s\n got: %s\nwant: %s", tc.in, tc.e, got, tc.out)
		}
	}
}
