package deploy

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// k8sObjects are the decoded manifests of deploy/kubernetes.
type k8sObjects struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
}

// decodeStrict decodes one manifest into the k8s.io/api type its kind names; an unknown field, a duplicate field,
// a wrong apiVersion or an unknown kind is an error.
func decodeStrict(doc []byte, into *k8sObjects) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	var apiVersion string
	switch tm.Kind {
	case "Deployment":
		d := &appsv1.Deployment{}
		obj, apiVersion = d, "apps/v1"
		into.deployments = append(into.deployments, d)
	case "Service":
		s := &corev1.Service{}
		obj, apiVersion = s, "v1"
		into.services = append(into.services, s)
	case "ConfigMap":
		c := &corev1.ConfigMap{}
		obj, apiVersion = c, "v1"
		into.configMaps = append(into.configMaps, c)
	default:
		return fmt.Errorf("kind %q is not one the test knows (Deployment, Service, ConfigMap)", tm.Kind)
	}
	if tm.APIVersion != apiVersion {
		return fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, apiVersion)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

var (
	docSeparator = regexp.MustCompile(`(?m)^---\s*$`)
	yamlComment  = regexp.MustCompile(`(?m)^\s*#.*$`)
)

func loadManifests(t *testing.T) *k8sObjects {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifest in deploy/kubernetes: %v", err)
	}
	objs := &k8sObjects{}
	for _, f := range files {
		for i, doc := range docSeparator.Split(readFile(t, f), -1) {
			if strings.TrimSpace(yamlComment.ReplaceAllString(doc, "")) == "" {
				continue
			}
			if err := decodeStrict([]byte(doc), objs); err != nil {
				t.Errorf("%s, document %d: %s", f, i+1, err)
			}
		}
	}
	if len(objs.deployments) != 1 || len(objs.services) != 1 || len(objs.configMaps) != 1 {
		t.Fatalf("want one Deployment, one Service and one ConfigMap in deploy/kubernetes, got %d, %d, %d",
			len(objs.deployments), len(objs.services), len(objs.configMaps))
	}
	return objs
}

// TestKubernetesStrictDecoding: the decoder the manifests pass refuses what kubectl --validate=strict refuses.
func TestKubernetesStrictDecoding(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":    "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selectr:\n    a: b\n",
		"duplicate field":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n",
		"wrong type":       "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n",
		"wrong apiVersion": "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: x\n",
		"unknown kind":     "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n",
		"misplaced mounts": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      volumeMounts: []\n",
	} {
		if err := decodeStrict([]byte(doc), &k8sObjects{}); err == nil {
			t.Errorf("%s: decoded without an error:\n%s", name, doc)
		}
	}
}

// TestKubernetesManifests decodes deploy/kubernetes strictly into the k8s.io/api types, checks that the pieces fit
// (selectors, ports, probes, volumes, shutdown timing, security), validates the ConfigMap's limits with the
// gateway, and runs the gateway with the Deployment's arguments against a real VictoriaMetrics.
func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	dep, svc, cm := objs.deployments[0], objs.services[0], objs.configMaps[0]
	pod := dep.Spec.Template

	if dep.Spec.Selector == nil || !subset(dep.Spec.Selector.MatchLabels, pod.Labels) || len(dep.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("the Deployment's selector %v does not select its pods %v", dep.Spec.Selector, pod.Labels)
	}
	if !subset(svc.Spec.Selector, pod.Labels) || len(svc.Spec.Selector) == 0 {
		t.Errorf("the Service's selector %v does not select the Deployment's pods %v", svc.Spec.Selector, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	flags := argFlags(c.Args)
	listenPort := strings.TrimPrefix(flags["httpListenAddr"], ":")
	var port *corev1.ContainerPort
	for i := range c.Ports {
		if fmt.Sprint(c.Ports[i].ContainerPort) == listenPort {
			port = &c.Ports[i]
		}
	}
	if port == nil || port.Name == "" {
		t.Fatalf("no named container port for -httpListenAddr=%s: %+v", flags["httpListenAddr"], c.Ports)
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort != intstr.FromString(port.Name) && p.TargetPort != intstr.FromInt32(port.ContainerPort) {
			t.Errorf("Service port %s targets %s, which is not the gateway's port %s", p.Name, p.TargetPort.String(), port.Name)
		}
	}
	for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != "/health" ||
			(probe.HTTPGet.Port != intstr.FromString(port.Name) && probe.HTTPGet.Port != intstr.FromInt32(port.ContainerPort)) {
			t.Errorf("the %s probe must GET /health on the gateway's port: %+v", name, probe)
		}
	}

	// Each replica forwards its part of the backends' query and insert slots: together they must not pass them.
	replicas := "(unset: 1)"
	if dep.Spec.Replicas != nil {
		replicas = fmt.Sprint(*dep.Spec.Replicas)
	}
	for _, kind := range []string{"read", "write"} {
		if flags[kind+".replicas"] != replicas {
			t.Errorf("-%s.replicas=%q is not the Deployment's %s replicas: together they would forward more %ss than the backends run at once", kind, flags[kind+".replicas"], replicas, kind)
		}
	}

	// Shutdown: the readiness probe must see /health fail before -http.shutdownDelay ends, and the pod must get
	// the delay plus the graceful shutdown before Kubernetes kills it.
	delay, grace := parseDuration(t, flags["http.shutdownDelay"]), parseDuration(t, flags["http.maxGracefulShutdownDuration"])
	rp := c.ReadinessProbe
	if probeTime := time.Duration(rp.PeriodSeconds*rp.FailureThreshold) * time.Second; delay <= probeTime {
		t.Errorf("-http.shutdownDelay=%s is not longer than the readiness probe needs to see the pod fail (%s)", delay, probeTime)
	}
	if tg := pod.Spec.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second <= delay+grace {
		t.Errorf("terminationGracePeriodSeconds must exceed -http.shutdownDelay + -http.maxGracefulShutdownDuration (%s)", delay+grace)
	}

	sc, psc := c.SecurityContext, pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("the pod must run as non-root with the RuntimeDefault seccomp profile: %+v", psc)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("the container must drop all capabilities, forbid privilege escalation and have a read-only root: %+v", sc)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the gateway never talks to the Kubernetes API: automountServiceAccountToken must be false")
	}

	// Every file flag points into a mounted ConfigMap that has that key: the one of configmap.yaml, or the
	// keys ConfigMap the operator creates with the command the docs give.
	ops := readFile(t, "../docs/operations.md")
	mounts := map[string]string{} // mount path → ConfigMap name
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				mounts[m.MountPath] = v.ConfigMap.Name
			}
		}
	}
	files := 0
	for name, value := range flags {
		if !strings.HasPrefix(value, "/") {
			continue
		}
		dir, key := filepath.Split(value)
		cmName := mounts[strings.TrimSuffix(dir, "/")]
		switch {
		case cmName == "":
			t.Errorf("-%s=%s is not in a mounted ConfigMap", name, value)
		case cmName == cm.Name:
			if _, ok := cm.Data[key]; !ok {
				t.Errorf("-%s=%s: ConfigMap %s has no key %s", name, value, cm.Name, key)
			}
		default:
			if want := "kubectl create configmap " + cmName + " --from-file=" + key; !strings.Contains(ops, want) {
				t.Errorf("-%s=%s: ConfigMap %s is not in deploy/kubernetes, and docs/operations.md does not say `%s`", name, value, cmName, want)
			}
		}
		files++
	}
	if files < 2 {
		t.Errorf("want the key and limits files among the flags, found %d file flags", files)
	}

	// The ConfigMap's limits pass the gateway's own check.
	dir := t.TempDir()
	for key, content := range cm.Data {
		writeFile(t, filepath.Join(dir, "config", key), content)
	}
	out, err := exec.Command(gatewayBin, "-ratelimit.validateConfig", "-ratelimit.config="+filepath.Join(dir, "config", "limits.yaml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Fatalf("the ConfigMap's limits.yaml does not pass -ratelimit.validateConfig: %v\n%s", err, out)
	}

	// The container's arguments start a working gateway: the paths point at the ConfigMap files and a key
	// pair of the test, the upstream and datasource at a real VictoriaMetrics.
	vm := vmtest.Start(t)
	key, pub, _ := writeKeyPair(t, dir, "issuer")
	writeFile(t, filepath.Join(dir, "keys", "pub.pem"), readFile(t, pub))
	repl := strings.NewReplacer("/etc/vmgateway/config/", dir+"/config/", "/etc/vmgateway/keys/", dir+"/keys/", "http://victoria-metrics:8428", vm.URL)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = repl.Replace(a)
	}
	gw, _ := startGateway(t, args)
	write := mint(t, key, "-mode=write", "-extraLabels=team=k8s")
	read := mint(t, key, "-mode=read", "-extraLabels=team=k8s")
	if st, body := call(t, http.MethodPost, gw+"/api/v1/import/prometheus", write, `k8s_check{team="other"} 1`); st != http.StatusNoContent {
		t.Fatalf("a write through the gateway: %d %s", st, body)
	}
	vmtest.Eventually(t, func() (bool, string) {
		r, err := instantQuery(t, gw, read, "k8s_check")
		return err == nil && len(r) == 1 && r[0].Metric["team"] == "k8s", fmt.Sprintf("read back: %v %v", r, err)
	})
	if st, _ := call(t, http.MethodGet, gw+"/api/v1/query?query=up", "", ""); st != http.StatusUnauthorized {
		t.Errorf("a request without a token got %d, want 401", st)
	}
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// argFlags maps -name=value arguments to name → value ("true" for a bare -name).
func argFlags(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if !ok {
			value = "true"
		}
		m[name] = value
	}
	return m
}

func parseDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %s", s, err)
	}
	return d
}
