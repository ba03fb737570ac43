package containerdplugin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePEMs writes a self-signed certificate and its key into dir and
// returns their paths: enough for a ca and a client entry.
func writePEMs(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func writeHostsFile(t *testing.T, root, dir, body string) {
	t.Helper()
	d := filepath.Join(root, dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, HostsFile), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// chainURLs is a chain in short: each host's URL, capabilities and TLS.
func chainURLs(ch UpstreamChain) []string {
	var out []string
	for _, h := range ch.Hosts {
		s := h.URL()
		if !h.Pull {
			s += " !pull"
		}
		if !h.Resolve {
			s += " !resolve"
		}
		if h.TLS != nil {
			if h.TLS.RootCAs != nil {
				s += " ca"
			}
			if len(h.TLS.Certificates) > 0 {
				s += " client"
			}
			if h.TLS.InsecureSkipVerify {
				s += " skip_verify"
			}
		}
		if h.Implied {
			s += " implied"
		}
		for k, v := range h.Header {
			s += " " + k + "=" + strings.Join(v, ",")
		}
		out = append(out, s)
	}
	return out
}

func TestUpstreamChain(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	cert, key := writePEMs(t, pki)
	const self = "127.0.0.1:7500"
	configured := func(t *testing.T, root, reg, base string) {
		if base != "" {
			writeHostsFile(t, root, reg, base)
		}
		if _, err := Configure(ConfigureOptions{HostsDir: root, Mirror: "http://" + self, Registries: []string{reg}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		registry string
		setup    func(t *testing.T, root string)
		want     []string
		warning  string
		err      string
	}{
		{
			name: "no hosts dir entry: the registry alone", registry: "registry.example",
			setup: func(*testing.T, string) {},
			want:  []string{"https://registry.example/v2 implied"},
		},
		{
			name: "docker.io maps to its API host", registry: "docker.io",
			setup: func(*testing.T, string) {},
			want:  []string{"https://registry-1.docker.io/v2 implied"},
		},
		{
			name: "shoal's entry and what comes before it are skipped", registry: "registry.example",
			setup: func(t *testing.T, root string) {
				configured(t, root, "registry.example", `server = "https://registry.example"
ca = "`+cert+`"

[host."https://mirror.example:5000"]
  capabilities = ["pull"]
  client = [["`+cert+`", "`+key+`"]]
  [host."https://mirror.example:5000".header]
    x-team = ["a", "b"]

[host."http://localhost:7500"]

[host."https://plain.example/proxy"]
  override_path = true
  skip_verify = true

[host."http://insecure.example:5000"]
`)
			},
			want: []string{
				"https://mirror.example:5000/v2 !resolve client x-team=a,b",
				"https://plain.example/proxy skip_verify",
				"http://insecure.example:5000/v2",
				"https://registry.example/v2 ca",
			},
		},
		{
			name: "a host before shoal's is not shoal's to ask", registry: "registry.example",
			setup: func(t *testing.T, root string) {
				writeHostsFile(t, root, "registry.example", `[host."https://first.example"]

`+mirrorBlock("http://"+self)+`
[host."https://after.example"]
`)
			},
			want: []string{"https://after.example/v2", "https://registry.example/v2 implied"},
		},
		{
			name: "without the markers, shoal's entry is found by its address", registry: "registry.example",
			setup: func(t *testing.T, root string) {
				writeHostsFile(t, root, "registry.example", `[host."https://a.example"]
[host."http://localhost:7500"]
[host."https://b.example"]
`)
			},
			want: []string{"https://b.example/v2", "https://registry.example/v2 implied"},
		},
		{
			name: "_default covers a registry without a directory", registry: "other.example:5000",
			setup: func(t *testing.T, root string) {
				configured(t, root, "", "")
				writeHostsFile(t, root, "_default", string(must(os.ReadFile(filepath.Join(root, "_default", HostsFile))))+`
[host."https://cache.example"]
  ca = ["`+cert+`"]
`)
			},
			want: []string{"https://cache.example/v2 ca", "https://other.example:5000/v2 implied"},
		},
		{
			name: "a file containerd cannot parse is ignored, as containerd ignores it", registry: "registry.example",
			setup: func(t *testing.T, root string) {
				writeHostsFile(t, root, "registry.example", "server = \"https://registry.example\"\n[host.\"https://m.example\"]\n  capabilities = [\"fly\"]\n")
			},
			want:    []string{"https://registry.example/v2 implied"},
			warning: "unknown capability fly",
		},
		{
			name: "a file that is not TOML is ignored too", registry: "registry.example",
			setup: func(t *testing.T, root string) {
				writeHostsFile(t, root, "registry.example", "server = \"https://registry.example\"\n[host.\"https://m.example\"\n")
			},
			want:    []string{"https://registry.example/v2 implied"},
			warning: "failed to decode",
		},
		{
			name: "a CA file that cannot be read fails the registry", registry: "registry.example",
			setup: func(t *testing.T, root string) {
				writeHostsFile(t, root, "registry.example", "server = \"https://registry.example\"\nca = \"missing.pem\"\n")
			},
			err: "missing.pem",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			tc.setup(t, root)
			u, err := NewUpstreamHosts(UpstreamHostsConfig{HostsDir: root, Self: self})
			if err != nil {
				t.Fatal(err)
			}
			ch, _, err := u.Chain(tc.registry)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ch.Warning != "" {
				t.Logf("warning: %s", ch.Warning)
			}
			if got := chainURLs(ch); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("chain\n got %q\nwant %q", got, tc.want)
			}
			if !strings.Contains(ch.Warning, tc.warning) || (tc.warning == "") != (ch.Warning == "") || strings.Contains(ch.Warning, "\n") {
				t.Errorf("warning %q, want %q", ch.Warning, tc.warning)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestUpstreamChainFollowsChanges: a changed hosts.toml is read again
// once Recheck has passed, with a new generation; an unchanged one is not.
func TestUpstreamChainFollowsChanges(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	u, err := NewUpstreamHosts(UpstreamHostsConfig{HostsDir: root, Recheck: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	ch, gen1, err := u.Chain("registry.example")
	if err != nil || len(ch.Hosts) != 1 {
		t.Fatalf("before: %+v %v", ch, err)
	}
	if _, gen, _ := u.Chain("registry.example"); gen != gen1 {
		t.Fatalf("generation moved from %d to %d with nothing changed", gen1, gen)
	}
	writeHostsFile(t, root, "registry.example", "[host.\"https://mirror.example\"]\n")
	ch, gen2, err := u.Chain("registry.example")
	if err != nil {
		t.Fatal(err)
	}
	if gen2 == gen1 || strings.Join(chainURLs(ch), "|") != "https://mirror.example/v2|https://registry.example/v2 implied" {
		t.Fatalf("after the change: generation %d (was %d), chain %q", gen2, gen1, chainURLs(ch))
	}
}
