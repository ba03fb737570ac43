package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/deploy"
)

const (
	dashboardPath = deploy.DashboardFile
	unitPath      = "systemd/shoal.service"
	envPath       = "systemd/shoal.env"
)

type dashboard struct {
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			X, Y, W, H int
		} `json:"gridPos"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// TestGrafanaDashboard checks the dashboard's shape; e2e/k8s checks its
// queries against the metrics the chart's daemons export.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q, %d panels", d.UID, len(d.Panels))
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q has grid position %+v", p.Title, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the dashboard's data source variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
				t.Errorf("panel %q: unbalanced query %s", p.Title, tg.Expr)
			}
			queries++
		}
	}
	refs, err := deploy.DashboardMetrics(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) == 0 || queries == 0 {
		t.Fatal("the dashboard queries no shoal metric")
	}
}

// TestSystemdUnit checks that the unit and its environment file speak the
// binary's language: every SHOAL_ variable names a flag of the commands the
// unit runs, the mirror containerd is pointed at is the one the daemon
// serves, and the paths the daemon and configure write are writable under
// the unit's sandboxing.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the shoal binary; -short runs the render tests only")
	}
	bin := buildShoal(t)
	unit := readUnit(t)
	env := readEnv(t)

	exec0 := func(key string) []string {
		v := unit[key]
		if len(v) != 1 {
			t.Fatalf("%s given %d times", key, len(v))
		}
		f := strings.Fields(v[0])
		if f[0] != "/usr/local/bin/shoal" {
			t.Fatalf("%s runs %s", key, f[0])
		}
		return f[1:]
	}
	daemon, configure := exec0("ExecStart"), exec0("ExecStartPre")
	if !slices.Equal(daemon, []string{"daemon"}) || !slices.Equal(configure, []string{"configure", "containerd"}) {
		t.Fatalf("the unit runs shoal %v and shoal %v", daemon, configure)
	}
	flags := map[string]bool{}
	for _, args := range [][]string{daemon, configure} {
		out, err := exec.CommandContext(t.Context(), bin, append(args, "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("shoal %v --help: %v\n%s", args, err, out)
		}
		for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
			flags[m[1]] = true
		}
	}
	for name := range env {
		flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "SHOAL_"), "_", "-"))
		if !flags[flag] {
			t.Errorf("%s sets %s, but neither command has --%s", envPath, name, flag)
		}
	}
	mirror, err := url.Parse(env["SHOAL_MIRROR"])
	if err != nil || mirror.Host != env["SHOAL_MIRROR_ADDR"] {
		t.Errorf("configure points containerd at %s, the daemon listens on %s", env["SHOAL_MIRROR"], env["SHOAL_MIRROR_ADDR"])
	}
	if h, _, _ := net.SplitHostPort(env["SHOAL_MIRROR_ADDR"]); !isLoopback(h) {
		t.Errorf("SHOAL_MIRROR_ADDR %s is not on loopback", env["SHOAL_MIRROR_ADDR"])
	}
	if got := "/var/lib/" + strings.Join(unit["StateDirectory"], ""); got != env["SHOAL_DATA_DIR"] {
		t.Errorf("StateDirectory makes %s writable, the data dir is %s", got, env["SHOAL_DATA_DIR"])
	}
	writable := strings.Fields(strings.Join(unit["ReadWritePaths"], " "))
	if !slices.Contains(writable, "-"+env["SHOAL_HOSTS_DIR"]) && !slices.Contains(writable, env["SHOAL_HOSTS_DIR"]) {
		t.Errorf("ReadWritePaths %v lack the hosts dir %s that configure writes", writable, env["SHOAL_HOSTS_DIR"])
	}
	if unit["ProtectSystem"][0] != "strict" || unit["NoNewPrivileges"][0] != "yes" || len(unit["CapabilityBoundingSet"]) != 1 || unit["CapabilityBoundingSet"][0] != "" {
		t.Error("the unit is not locked down: ProtectSystem=strict, NoNewPrivileges=yes and an empty CapabilityBoundingSet")
	}

	// systemd's own parser, when the machine has it.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze here: the unit's syntax is not checked by systemd")
		return
	}
	dir := t.TempDir()
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "/usr/local/bin/shoal", bin)
	text = strings.ReplaceAll(text, "/etc/shoal/shoal.env", filepath.Join(dir, "shoal.env"))
	if err := os.WriteFile(filepath.Join(dir, "shoal.service"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), analyze, "verify", filepath.Join(dir, "shoal.service")).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// readUnit reads the unit's Key=Value lines (all sections; keys repeat).
func readUnit(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q", unitPath, line)
		}
		kv[k] = append(kv[k], v)
	}
	return kv
}

// readEnv reads the environment file's SHOAL_ variables, the commented-out
// examples included.
func readEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(envPath)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if l, ok := strings.CutPrefix(line, "#"); ok && strings.HasPrefix(l, "SHOAL_") {
			line = l
		}
		if !strings.HasPrefix(line, "SHOAL_") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q", envPath, line)
		}
		env[k] = v
	}
	return env
}

// buildShoal builds the binary the image would hold: static, as a
// distroless image needs.
func buildShoal(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shoal")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", bin, "../cmd/shoal")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building shoal: %v\n%s", err, out)
	}
	return bin
}
