package confsource

import (
	"strings"
	"testing"
)

func TestTopList(t *testing.T) {
	shape := TopList{What: "widget config", Key: "widgets", Items: "widgets", ForNone: "for no widgets"}
	for _, tc := range []struct {
		in    string
		items int    // with want empty: the items of the list
		want  string // the error, or a problem of the list
	}{
		{"widgets: [a, b]\n", 2, ""},
		{"widgets: []\n", 0, ""},
		{"", 0, "the widget config w.yaml is empty: want a `widgets:` list (write `widgets: []` for no widgets)"},
		{"# nothing\n", 0, "is empty"},
		{"widgets: [\n", 0, "cannot parse the widget config w.yaml: "},
		{"widgets: []\n---\nwidgets: []\n", 0, "w.yaml:2: a second YAML document: the widget config is one document"},
		{"- a\n", 0, "w.yaml:1: want a mapping with a `widgets:` list, got a list"},
		{"other: 1\n", 0, "w.yaml:1: unknown key \"other\": the only top-level key is `widgets`"},
		{"other: 1\n", 0, "no `widgets:` key (write `widgets: []` for no widgets)"},
		{"widgets: \"1\"\n", 0, "w.yaml:1: widgets: want a list of widgets, got \"1\" (a quoted string)"},
		{"widgets: []\nwidgets: []\n", 0, "w.yaml:2: duplicate key \"widgets\" (first at line 1)"},
	} {
		list, p, err := shape.Parse([]byte(tc.in), "w.yaml")
		if err == nil && p != nil {
			err = p.Err()
		}
		if tc.want == "" {
			if err != nil || list == nil || len(list.Content) != tc.items {
				t.Errorf("%q: list %v, error %v; want %d items", tc.in, list, err, tc.items)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}
