package vmtest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The VictoriaMetrics cluster is not packaged for Debian. Its binaries come from $VMCLUSTER_BIN, a directory
// holding vmstorage, vminsert and vmselect, or else are unpacked once into a cache from the xz-compressed release
// kept in shared/vm-cluster beside the repository (or $VMCLUSTER_SRC), checked against its SHA256SUMS.
const (
	ClusterBinEnv = "VMCLUSTER_BIN"
	ClusterSrcEnv = "VMCLUSTER_SRC"
	// ClusterCacheEnv overrides where the unpacked binaries are kept (default: the user's cache dir).
	ClusterCacheEnv = "VMCLUSTER_CACHE"
)

var clusterBinaries = []string{"vmstorage", "vminsert", "vmselect"}

var clusterBin struct {
	once sync.Once
	dir  string
	err  error // the binaries exist but cannot be used: always a failure
	miss string
}

// RequireCluster returns the directory holding the cluster binaries. Without them the test is skipped on a
// developer machine, with a message naming $VMCLUSTER_BIN, and fails under CI.
func RequireCluster(t testing.TB) string {
	t.Helper()
	clusterBin.once.Do(func() { clusterBin.dir, clusterBin.miss, clusterBin.err = findClusterBinaries() })
	if clusterBin.err != nil {
		t.Fatalf("VictoriaMetrics cluster binaries: %s", clusterBin.err)
	}
	if clusterBin.miss != "" {
		msg := clusterBin.miss + "; set $" + ClusterBinEnv + " to a directory with vmstorage, vminsert and vmselect, or $" +
			ClusterSrcEnv + " to a directory with their .xz files and SHA256SUMS"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return clusterBin.dir
}

func findClusterBinaries() (dir, missing string, err error) {
	if dir := os.Getenv(ClusterBinEnv); dir != "" {
		for _, b := range clusterBinaries {
			if _, err := exec.LookPath(filepath.Join(dir, b)); err != nil {
				return "", "", fmt.Errorf("$%s=%s: %s", ClusterBinEnv, dir, err)
			}
		}
		return dir, "", nil
	}
	src := clusterSource()
	if src == "" {
		return "", "no $" + ClusterBinEnv + " and no shared/vm-cluster beside the repository or above it", nil
	}
	dir, err = unpackCluster(src)
	return dir, "", err
}

// clusterSource finds the directory of the compressed binaries: $VMCLUSTER_SRC, or shared/vm-cluster in the parent
// of the module root or any directory above it (CI clones the repository with shared/ beside it; a git worktree
// sits deeper).
func clusterSource() string {
	if s := os.Getenv(ClusterSrcEnv); s != "" {
		return s
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	root := wd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		up := filepath.Dir(root)
		if up == root {
			root = wd
			break
		}
		root = up
	}
	for d := filepath.Dir(root); ; d = filepath.Dir(d) {
		cand := filepath.Join(d, "shared", "vm-cluster")
		if _, err := os.Stat(filepath.Join(cand, "SHA256SUMS")); err == nil {
			return cand
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// unpackCluster decompresses src/<name>.xz into a cache dir keyed by the sums, unless a copy with the right sum is
// there already. Packages testing at once may unpack side by side: each writes a temp file and renames it.
func unpackCluster(src string) (string, error) {
	sumsFile := filepath.Join(src, "SHA256SUMS")
	sumsRaw, err := os.ReadFile(sumsFile)
	if err != nil {
		return "", err
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(sumsRaw)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			sums[strings.TrimPrefix(f[1], "*")] = f[0]
		}
	}
	key := sha256.Sum256(sumsRaw)
	cache := os.Getenv(ClusterCacheEnv)
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cache = filepath.Join(base, "vmgateway")
	}
	dir := filepath.Join(cache, "vm-cluster-"+hex.EncodeToString(key[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, b := range clusterBinaries {
		want := sums[b]
		if want == "" {
			return "", fmt.Errorf("%s has no sum for %s", sumsFile, b)
		}
		dst := filepath.Join(dir, b)
		if got, err := fileSum(dst); err == nil && got == want {
			continue
		}
		xz, err := exec.LookPath("xz")
		if err != nil {
			return "", fmt.Errorf("xz is needed to unpack %s (Debian package xz-utils): %s", src, err)
		}
		tmp, err := os.CreateTemp(dir, b+".tmp*")
		if err != nil {
			return "", err
		}
		cmd := exec.Command(xz, "-dc", filepath.Join(src, b+".xz"))
		var stderr Buffer
		cmd.Stdout, cmd.Stderr = tmp, &stderr
		err = cmd.Run()
		_ = tmp.Close()
		if err != nil {
			_ = os.Remove(tmp.Name())
			return "", fmt.Errorf("xz -dc %s.xz: %s %s", filepath.Join(src, b), err, stderr.String())
		}
		if got, err := fileSum(tmp.Name()); err != nil || got != want {
			_ = os.Remove(tmp.Name())
			return "", fmt.Errorf("%s.xz unpacks to sha256 %s, %s says %s (%v)", filepath.Join(src, b), got, sumsFile, want, err)
		}
		if err := os.Chmod(tmp.Name(), 0o755); err != nil {
			return "", err
		}
		if err := os.Rename(tmp.Name(), dst); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Cluster is a running VictoriaMetrics cluster on loopback: one vmstorage, one vminsert, one vmselect (more with
// StartSelect).
type Cluster struct {
	Storage, Insert, Select *VM
	// bin, dir and selectAddr are what StartSelect starts another vmselect with.
	bin, dir, selectAddr string
	selects              int
}

// StartCluster starts a cluster from RequireCluster's binaries with temp data and random ports and stops it when
// the test ends. Extra flags go to vmselect, whose caching would otherwise hide fresh data.
func StartCluster(t testing.TB, selectFlags ...string) *Cluster {
	t.Helper()
	bin := RequireCluster(t)
	dir := t.TempDir()
	var insertAddr, selectAddr string
	storage, err := startProc(filepath.Join(dir, "storage"), func(addr string) []string {
		insertAddr, _ = freeAddr()
		selectAddr, _ = freeAddr()
		return []string{filepath.Join(bin, "vmstorage"), "-storageDataPath=" + filepath.Join(dir, "storage", "data"),
			"-httpListenAddr=" + addr, "-vminsertAddr=" + insertAddr, "-vmselectAddr=" + selectAddr,
			"-retentionPeriod=100y", "-loggerLevel=ERROR"}
	})
	if err != nil {
		t.Fatalf("vmstorage did not start: %s", err)
	}
	t.Cleanup(storage.Stop)
	c := &Cluster{Storage: storage, bin: bin, dir: dir, selectAddr: selectAddr}
	vm, err := startProc(filepath.Join(dir, "vminsert"), func(addr string) []string {
		return []string{filepath.Join(bin, "vminsert"), "-httpListenAddr=" + addr, "-loggerLevel=ERROR", "-storageNode=" + insertAddr}
	})
	if err != nil {
		t.Fatalf("vminsert did not start: %s", err)
	}
	t.Cleanup(vm.Stop)
	c.Insert = vm
	c.Select = c.StartSelect(t, selectFlags...)
	return c
}

// StartSelect starts another vmselect of the cluster, with extra flags, and stops it when the test ends.
func (c *Cluster) StartSelect(t testing.TB, flags ...string) *VM {
	t.Helper()
	c.selects++
	dir := filepath.Join(c.dir, fmt.Sprintf("vmselect%d", c.selects))
	vm, err := startProc(dir, func(addr string) []string {
		// Each its own -cacheDataPath: vmselects that share the default /tmp/searchResults remove each other's
		// temporary files and stop (FATAL: cannot remove "/tmp/searchResults/…").
		return append([]string{filepath.Join(c.bin, "vmselect"), "-httpListenAddr=" + addr, "-loggerLevel=ERROR",
			"-storageNode=" + c.selectAddr, "-cacheDataPath=" + filepath.Join(dir, "cache"), "-search.latencyOffset=0s",
			"-search.disableCache", "-dedup.minScrapeInterval=0s"}, flags...)
	})
	if err != nil {
		t.Fatalf("vmselect did not start: %s", err)
	}
	t.Cleanup(vm.Stop)
	return vm
}

// Flush makes what vmstorage received searchable; new series may still take a moment: read back with Eventually.
func (c *Cluster) Flush(t testing.TB) {
	t.Helper()
	resp, err := http.Get(c.Storage.URL + "/internal/force_flush")
	if err != nil {
		t.Fatalf("vmstorage force_flush: %s", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vmstorage force_flush: status %d", resp.StatusCode)
	}
}
