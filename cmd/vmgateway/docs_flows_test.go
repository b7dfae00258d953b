package main

// The documentation is tested, so that it cannot drift from the product. README.md and docs/*.md mark the fenced
// blocks the tests run with the word `tested` in the info string:
//
//	```console tested            a terminal transcript: `$ command` lines, each followed by the output it must
//	                             print. A line `...` matches any number of lines, and `...` inside a line matches
//	                             any text. Every command must exit 0 (show a failing one with `; echo "exit $?"`).
//	                             A command line ending in `\` continues on the next line.
//	```sh tested gateway         one `vmgateway <flags>` command: the test starts the gateway with these flags,
//	                             in front of a fresh VictoriaMetrics single-node.
//	```yaml tested file=NAME     the file NAME, written to the working directory before the next blocks run.
//
// The blocks of one Markdown file run in order, in one fresh working directory, as one shell session: variables
// assigned in one command (TOKEN=$(...)) are there in the next ones. localhost:8431 is the gateway and
// localhost:8428 VictoriaMetrics: the test replaces both with the addresses of the processes it started.
// `vmgateway` on the PATH is the binary under test.

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/docstest"
	"github.com/vmgateway/vmgateway/internal/enforce"
	"github.com/vmgateway/vmgateway/internal/route"
	"github.com/vmgateway/vmgateway/internal/tenant"
	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestDocsFlows runs the tested blocks of every doc against a real VictoriaMetrics and the real gateway binary.
func TestDocsFlows(t *testing.T) {
	bash := vmtest.Require(t, "bash")
	// The tools the documented commands call.
	for _, tool := range []string{"curl", "openssl", "promtool"} {
		vmtest.Require(t, tool)
	}
	ran := 0
	for _, file := range docFiles(t) {
		blocks, _ := docstest.Parse(t, file)
		var tested []docstest.Block
		for _, b := range blocks {
			if b.Has("tested") {
				tested = append(tested, b)
			}
		}
		if len(tested) == 0 {
			continue
		}
		ran++
		t.Run(filepath.Base(file), func(t *testing.T) {
			newDocRun(t, bash).run(tested)
		})
	}
	if ran == 0 {
		t.Fatal("no doc has a tested block: the docs examples are not tested")
	}
}

// docRun is the state of one doc's tested blocks: a shell session in a working directory, the processes started.
type docRun struct {
	t  *testing.T
	sh *docstest.Session
	vm *vmtest.VM
	g  *gw
}

func newDocRun(t *testing.T, bash string) *docRun {
	dir := t.TempDir()
	// The gateway started by a gateway block runs here too, so relative paths in its flags resolve as in the doc.
	t.Chdir(dir)
	return &docRun{t: t, sh: docstest.NewSession(t, bash, dir, filepath.Dir(gatewayBin))}
}

func (d *docRun) run(blocks []docstest.Block) {
	for _, b := range blocks {
		switch {
		case b.Param("file") != "":
			name := b.Param("file")
			if err := os.WriteFile(filepath.Join(d.sh.Dir, name), []byte(d.subst(b, b.Text)+"\n"), 0o600); err != nil {
				d.t.Fatalf("%s: %s", b, err)
			}
		case b.Has("gateway"):
			d.startGateway(b)
		case b.Info[0] == "console":
			// New series take about a second to become searchable in VictoriaMetrics: a read of data right after
			// a write is retried until it prints what the doc says, as a reader would see it a moment later. Every
			// other command (writes, token tools, status checks) runs once: a retry there would hide a flaky answer.
			d.sh.Transcript(d.t, b, func(s string) string { return d.subst(b, s) }, func(cmd string) time.Duration {
				if waitsForData(cmd) {
					return 15 * time.Second
				}
				return 0
			})
		default:
			d.t.Fatalf("%s: a tested block must be `console tested`, `sh tested gateway` or `<lang> tested file=NAME`; got %q", b, strings.Join(b.Info, " "))
		}
	}
}

// subst points the doc's addresses at the processes the test started.
func (d *docRun) subst(b docstest.Block, s string) string {
	if strings.Contains(s, "localhost:8428") || strings.Contains(s, "127.0.0.1:8428") {
		if d.vm == nil {
			d.vm = vmtest.Start(d.t)
		}
		s = strings.NewReplacer("localhost:8428", hostPort(d.vm.URL), "127.0.0.1:8428", hostPort(d.vm.URL)).Replace(s)
	}
	if strings.Contains(s, "localhost:8431") || strings.Contains(s, "127.0.0.1:8431") {
		if d.g == nil {
			if b.Has("gateway") {
				return s // its own -httpListenAddr, which the test replaces
			}
			d.t.Fatalf("%s talks to the gateway at localhost:8431, but no `sh tested gateway` block of the doc started one before", b)
		}
		s = strings.NewReplacer("localhost:8431", hostPort(d.g.URL), "127.0.0.1:8431", hostPort(d.g.URL)).Replace(s)
	}
	return s
}

func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// startGateway starts the gateway with the flags of a `sh tested gateway` block; the shell splits them, so quoting
// and variables mean what they mean to a reader who pastes the command.
func (d *docRun) startGateway(b docstest.Block) {
	cmdline := strings.TrimSpace(strings.ReplaceAll(b.Text, "\\\n", " "))
	fields := strings.Fields(cmdline)
	if len(fields) == 0 || (fields[0] != "vmgateway" && !strings.HasSuffix(fields[0], "/vmgateway")) {
		d.t.Fatalf("%s: a gateway block holds one `vmgateway <flags>` command, got %q", b, cmdline)
	}
	if d.vm == nil {
		d.vm = vmtest.Start(d.t)
	}
	args, err := d.sh.Split(d.subst(b, strings.TrimSpace(strings.TrimPrefix(cmdline, fields[0]))))
	if err != nil {
		d.t.Fatalf("%s: cannot split the gateway flags: %v", b, err)
	}
	var flags []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-httpListenAddr") { // the test picks a free port
			flags = append(flags, a)
		}
	}
	if d.g != nil {
		d.g.stop(syscall.SIGTERM)
	}
	d.g = startGateway(d.t, flags...)
}

// dataReads are the read APIs whose answer shows data written a moment before.
var dataReads = []string{"/api/v1/query", "/api/v1/label", "/api/v1/series", "/api/v1/export", "/federate"}

// waitsForData tells whether a documented command reads data through the gateway: a curl of a read API that
// prints the answer's body rather than its status code or headers.
func waitsForData(cmd string) bool {
	if !strings.HasPrefix(cmd, "curl ") || strings.Contains(cmd, "%{http_code}") || strings.Contains(cmd, "-D -") {
		return false
	}
	for _, w := range []string{"/import", "/write", "delete_series", "/admin/"} {
		if strings.Contains(cmd, w) {
			return false
		}
	}
	for _, r := range dataReads {
		if strings.Contains(cmd, r) {
			return true
		}
	}
	return false
}

// TestDocsAlertRules checks the suggested alerts of docs/operations.md with promtool.
func TestDocsAlertRules(t *testing.T) {
	promtool := vmtest.Require(t, "promtool")
	blocks, _ := docstest.Parse(t, "../../docs/operations.md")
	n := 0
	for _, b := range blocks {
		if !b.Has("tested") || b.Param("file") == "" || !strings.HasPrefix(b.Text, "groups:") {
			continue
		}
		n++
		path := filepath.Join(t.TempDir(), b.Param("file"))
		if err := os.WriteFile(path, []byte(b.Text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("%s: promtool check rules refuses the documented alerts: %v\n%s", b, err, out)
		}
	}
	if n == 0 {
		t.Fatal("docs/operations.md has no `yaml tested file=...` block with alerting rules (groups:)")
	}
}

// TestDocsRewriteExamples checks the query rewriting tables of the docs (a table right after the comment
// `<!-- tested: rewrite -->`, columns extra_labels, extra_filters, query, becomes) with the enforcer itself.
func TestDocsRewriteExamples(t *testing.T) {
	n := 0
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) != "<!-- tested: rewrite -->" {
				continue
			}
			// Skip to the table, then past its header and delimiter rows.
			j := i + 1
			for j < len(lines) && !strings.HasPrefix(lines[j], "|") {
				j++
			}
			for j += 2; j < len(lines) && strings.HasPrefix(lines[j], "|"); j++ {
				n++
				checkRewriteRow(t, fmt.Sprintf("%s:%d", filepath.Base(file), j+1), lines[j])
			}
			i = j
		}
	}
	if n == 0 {
		t.Fatal("no doc has a `<!-- tested: rewrite -->` table")
	}
}

func checkRewriteRow(t *testing.T, where, row string) {
	t.Helper()
	cells := docstest.SplitRow(row)
	if len(cells) != 4 {
		t.Errorf("%s: a rewrite row has 4 cells (extra_labels, extra_filters, query, becomes), got %d", where, len(cells))
		return
	}
	spans := docstest.CodeSpans
	var labels []enforce.Label
	for _, l := range spans(cells[0]) {
		name, value, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("%s: extra label %q is not name=value", where, l)
			return
		}
		labels = append(labels, enforce.Label{Name: name, Value: value})
	}
	q, want := spans(cells[2]), spans(cells[3])
	if len(q) != 1 || len(want) != 1 {
		t.Errorf("%s: the query and its rewrite must be one code span each", where)
		return
	}
	e, err := enforce.New(labels, spans(cells[1]))
	if err != nil {
		t.Errorf("%s: the enforcer refuses the token: %s", where, err)
		return
	}
	got, err := e.Query(q[0])
	if err != nil {
		got = "error: " + err.Error()
	}
	if got != want[0] {
		t.Errorf("%s: the query\n\t%s\nbecomes\n\t%s\nbut the doc says\n\t%s", where, q[0], got, want[0])
	}
}

// TestDocsFlagsExist checks that every flag the docs name exists: the gateway's own, `token mint`'s, or one of the
// VictoriaMetrics clients the docs set up (vmagent, vmalert, victoria-metrics 1.79.5 and the current release), as
// their -help lists them.
func TestDocsFlagsExist(t *testing.T) {
	known := map[string]string{}
	gateway := map[string]string{"help": "vmgateway", "h": "vmgateway"}
	for _, f := range gatewayFlags() {
		known[f.Name], gateway[f.Name] = "vmgateway", "vmgateway"
	}
	mint := mintFlags(t)
	for name := range mint {
		if known[name] == "" {
			known[name] = "vmgateway token mint"
		}
	}
	helpFlag := regexp.MustCompile(`(?m)^\s+-([a-zA-Z][a-zA-Z0-9_.]*)`)
	// The current single-node too, for the flags of VictoriaMetrics the docs suggest that 1.79.5 lacks.
	for _, bin := range []string{"vmagent", "vmalert", "victoria-metrics", vmtest.CurrentVersion} {
		var path string
		if bin == vmtest.CurrentVersion {
			path = vmtest.RequireCurrent(t)
		} else {
			path = vmtest.Require(t, bin)
		}
		out, _ := exec.Command(path, "-help").CombinedOutput()
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			if known[m[1]] == "" {
				known[m[1]] = bin
			}
		}
	}
	// The flags of the repository's other programs (the benchmark harness), from their source.
	flagDef := regexp.MustCompile(`\.(?:String|Bool|Int|Int64|Uint|Uint64|Float64|Duration|Var|Func|StringVar|BoolVar|IntVar|Int64Var|UintVar|Uint64Var|Float64Var|DurationVar)\((?:&[\w.\[\]]+, )?"([a-zA-Z][\w.]*)"`)
	err := filepath.WalkDir("../..", func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() && (de.Name() == ".git" || de.Name() == "vmgateway" && filepath.Base(filepath.Dir(path)) == "cmd") {
			if err == nil {
				err = filepath.SkipDir
			}
			return err
		}
		if de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		for _, m := range flagDef.FindAllStringSubmatch(string(data), -1) {
			if known[m[1]] == "" {
				known[m[1]] = path
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Placeholders for "a flag" in prose, and the flags every Go program has.
	for _, name := range []string{"name", "flag", "help", "h"} {
		known[name] = "placeholder"
	}

	dotted := regexp.MustCompile("(?:^|[\\s`(\\['\"=,])-([a-z][a-zA-Z0-9]*(?:\\.[a-zA-Z][a-zA-Z0-9]*)+)")
	spanFlag := regexp.MustCompile("^-([a-zA-Z][a-zA-Z0-9_.]*)(?:=.*)?$")
	checked := 0
	for _, file := range docFiles(t) {
		blocks, prose := docstest.Parse(t, file)
		base := filepath.Base(file)
		check := func(name, where string, set map[string]string) {
			checked++
			if set[name] == "" {
				t.Errorf("%s: %s names the flag -%s, which does not exist", base, where, name)
			}
		}
		texts := []string{prose}
		for _, b := range blocks {
			texts = append(texts, b.Text)
		}
		for _, text := range texts {
			for _, m := range dotted.FindAllStringSubmatchIndex(text, -1) {
				if end := m[3]; end < len(text) && text[end] == '*' {
					continue // a family of flags, such as -read.tls*
				}
				check(text[m[2]:m[3]], "the text", known)
			}
		}
		for _, span := range docstest.CodeSpans(prose) {
			// Single letters are other tools' options (curl -d), never the gateway's.
			if f := spanFlag.FindStringSubmatch(span); f != nil && len(f[1]) > 1 {
				check(f[1], "`"+span+"`", known)
			}
		}
		// The words of vmgateway command lines in code blocks are the gateway's flags, or token mint's.
		for _, b := range blocks {
			for _, cmd := range docstest.CommandLines(b.Text) {
				words := vmgatewayWords(cmd)
				if words == nil {
					continue
				}
				set := gateway
				if len(words) > 1 && words[0] == "token" && words[1] == "mint" {
					set = mint
				}
				for _, w := range words {
					w = strings.Trim(w, `'"`)
					if f := spanFlag.FindStringSubmatch(w); f != nil {
						check(f[1], fmt.Sprintf("%s:%d", filepath.Base(b.File), b.Line), set)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no flag found in the docs: the check is broken")
	}
}

// vmgatewayWords returns the arguments of the vmgateway command in a command line (also inside `X=$(...)`), or nil.
func vmgatewayWords(cmd string) []string {
	words := strings.Fields(cmd)
	for i, w := range words {
		if j := strings.LastIndex(w, "$("); j >= 0 {
			w = w[j+2:]
		}
		if w != "vmgateway" && !strings.HasSuffix(w, "/vmgateway") {
			continue
		}
		var args []string
		for _, a := range words[i+1:] {
			if a == "|" || a == ";" || a == "&&" || a == "||" || strings.HasPrefix(a, ")") {
				break
			}
			args = append(args, strings.TrimSuffix(a, ")"))
		}
		return args
	}
	return nil
}

func mintFlags(t *testing.T) map[string]string {
	var help bytes.Buffer
	runToken([]string{"mint", "-help"}, &help, &help)
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-zA-Z]+)`).FindAllStringSubmatch(help.String(), -1) {
		out[m[1]] = "vmgateway token mint"
	}
	if len(out) == 0 {
		t.Fatalf("cannot read the token mint flags from its -help:\n%s", help.String())
	}
	return out
}

// TestDocsMetrics checks that docs/operations.md lists every metric the gateway exports, and that every metric the
// docs name exists in the code.
func TestDocsMetrics(t *testing.T) {
	metricName := regexp.MustCompile(`vmgateway_[a-z0-9_]+[a-z0-9]`)
	exported := map[string]bool{}
	for _, root := range []string{"../../internal", "."} {
		err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			data, err := os.ReadFile(path)
			for _, m := range metricName.FindAllString(string(data), -1) {
				exported[m] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(exported) < 10 {
		t.Fatalf("found only %d metric names in the code: the scan is broken", len(exported))
	}
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricName.FindAllString(string(data), -1) {
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if s, ok := strings.CutSuffix(m, suffix); ok && exported[s] {
					base = s
				}
			}
			if !exported[base] {
				t.Errorf("%s names the metric %s, which the gateway does not export", filepath.Base(file), m)
			}
		}
	}
	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(vmgateway_[a-z0-9_]+)").FindAllStringSubmatch(string(ops), -1) {
		documented[m[1]] = true
	}
	var missing []string
	for m := range exported {
		if !documented[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/operations.md has no table row (| `name` | ...) for these exported metrics: %s", strings.Join(missing, ", "))
	}
}

// TestDocsErrorMessages checks that every message docs/troubleshooting.md lists (the code span that starts a table
// row) is one the code can return: it must fit a string literal of the gateway's code, where the literal's format
// verbs and the doc's "…" stand for any text.
func TestDocsErrorMessages(t *testing.T) {
	literals := docstest.StringLiterals(t, "../../internal", ".")
	data, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		// The first cell is the message, in a code span: `...`, or ``...`` when it holds a backtick.
		msg := docstest.SplitRow(line)[0]
		switch {
		case strings.HasPrefix(msg, "``") && strings.HasSuffix(msg, "``"):
			msg = strings.TrimPrefix(strings.TrimSuffix(msg[2:len(msg)-2], " "), " ")
		case strings.HasPrefix(msg, "`") && strings.HasSuffix(msg, "`") && strings.Count(msg, "`") == 2:
			msg = msg[1 : len(msg)-1]
		default:
			t.Errorf("troubleshooting.md:%d: the message cell must be one code span, got %s", i+1, msg)
			continue
		}
		n++
		if !docstest.LiteralFits(literals, msg) {
			t.Errorf("troubleshooting.md:%d: no string in the code can produce the message\n\t%s", i+1, msg)
		}
	}
	if n < 20 {
		t.Fatalf("troubleshooting.md lists %d messages in table rows (| `message` | cause | fix |); the check is broken or the doc is", n)
	}
}

// TestDocsLinks checks that the relative links of the docs point at files and headings that exist, and that
// docs/README.md links every doc.
func TestDocsLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	anchorsOf := map[string]map[string]bool{}
	anchors := func(file string) map[string]bool {
		if a, ok := anchorsOf[file]; ok {
			return a
		}
		a := map[string]bool{}
		if _, prose := docstest.Parse(t, file); prose != "" {
			for _, l := range strings.Split(prose, "\n") {
				if h, ok := strings.CutPrefix(strings.TrimLeft(l, "#"), " "); ok && strings.HasPrefix(l, "#") {
					a[docstest.Anchor(h)] = true
				}
			}
		}
		anchorsOf[file] = a
		return a
	}
	index, err := os.ReadFile("../../docs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range docFiles(t) {
		if filepath.Dir(file) == "../../docs" && filepath.Base(file) != "README.md" &&
			!strings.Contains(string(index), "("+filepath.Base(file)+")") {
			t.Errorf("docs/README.md does not link %s", filepath.Base(file))
		}
		_, prose := docstest.Parse(t, file)
		for _, m := range link.FindAllStringSubmatch(prose, -1) {
			target := m[1]
			if u, err := url.Parse(target); err != nil || u.Scheme != "" {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s links %s, which does not exist", filepath.Base(file), target)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(dest, ".md") && !anchors(dest)[frag] {
				t.Errorf("%s links %s: %s has no heading with the anchor #%s", filepath.Base(file), target, filepath.Base(dest), frag)
			}
		}
	}
}

// TestDocsRouteTable checks the route table of docs/cluster-mode.md (the table after `<!-- tested: routes -->`)
// against the router: each row's path must be classified as the row says and forwarded to the paths it shows, and
// every API of internal/route must have a row.
func TestDocsRouteTable(t *testing.T) {
	data, err := os.ReadFile("../../docs/cluster-mode.md")
	if err != nil {
		t.Fatal(err)
	}
	handling := map[route.Args]string{
		route.NoSelectors: "as is", route.QueryArg: "`query` rewritten", route.MatchArgs: "`match[]` rewritten",
		route.WriteArgs: "`extra_label` set", route.Unenforceable: "403", route.QueryText: "`query` checked, as is",
	}
	tid := tenant.ID{AccountID: 1, ProjectID: 5}
	documented := map[string]bool{}
	lines := strings.Split(string(data), "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == "<!-- tested: routes -->" {
			start = i
		}
	}
	if start < 0 {
		t.Fatal("docs/cluster-mode.md has no `<!-- tested: routes -->` table")
	}
	for i := start + 3; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
		cells := docstest.SplitRow(lines[i])
		if len(cells) != 6 {
			t.Errorf("cluster-mode.md:%d: want 6 cells, got %d", i+1, len(cells))
			continue
		}
		unquote := func(s string) string { return strings.Trim(s, "`") }
		api, path := unquote(cells[0]), unquote(cells[1])
		documented[api] = true
		rt, err := route.Lookup(path)
		if err != nil {
			t.Errorf("cluster-mode.md:%d: %s is refused: %s", i+1, path, err)
			continue
		}
		single, _ := rt.UpstreamPath(false, tid)
		cluster, _ := rt.UpstreamPath(true, tid)
		got := []string{"`" + rt.API + "`", "`" + path + "`", rt.Kind.String(), handling[rt.Args], "`" + single + "`", "`" + cluster + "`"}
		if want := strings.Join(cells, " | "); strings.Join(got, " | ") != want {
			t.Errorf("cluster-mode.md:%d: the row says\n\t| %s |\nbut the router gives\n\t| %s |", i+1, want, strings.Join(got, " | "))
		}
	}
	// Every API name in the route table's source must have a row.
	src, err := os.ReadFile("../../internal/route/table.go")
	if err != nil {
		t.Fatal(err)
	}
	apiName := regexp.MustCompile(`\{"([a-z][a-z0-9_]+)", (?:Read|Write|Admin),|API: "([a-z][a-z0-9_]+)"`)
	n := 0
	for _, m := range apiName.FindAllStringSubmatch(string(src), -1) {
		n++
		if name := m[1] + m[2]; !documented[name] {
			t.Errorf("the API %s of internal/route has no row in the route table of docs/cluster-mode.md", name)
		}
	}
	if n < 40 {
		t.Fatalf("found %d APIs in internal/route/table.go: the scan is broken", n)
	}
}

// TestWaitsForData: only reads of data are retried by the docs harness.
func TestWaitsForData(t *testing.T) {
	for cmd, want := range map[string]bool{
		`curl -s http://localhost:8431/api/v1/label/team/values -H "Authorization: Bearer $READ_DEV"`:                    true,
		"curl -s http://localhost:8431/api/v1/query -H \"Authorization: Bearer $FULL\" \\\n --data-urlencode 'query=up'": true,
		`curl -s -w '%{http_code}\n' http://localhost:8431/api/v1/import/prometheus -d 'x 1'`:                            false,
		`curl -s -w '%{http_code}\n' 'http://localhost:8431/api/v1/query?query=up'`:                                      false,
		`curl -s -D - 'http://localhost:8431/api/v1/query?query=up' -H "Authorization: Bearer $TOKEN"`:                   false,
		`curl -s 'http://localhost:8431/ratelimit/status?authKey=status-secret&tenant=0'`:                                false,
		`vmgateway token explain -auth.publicKeyFiles=pub.pem "$READ_DEV"`:                                               false,
		`curl -s -X POST 'http://localhost:8431/api/v1/admin/tsdb/delete_series?match[]=up'`:                             false,
	} {
		if got := waitsForData(cmd); got != want {
			t.Errorf("waitsForData(%q) = %v, want %v", cmd, got, want)
		}
	}
}
