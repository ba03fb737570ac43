package lab

import "testing"

// TestContainerdMirror puts the proxy in hosts.toml as a mirror in front of
// the registry and checks what containerd sends it, what it does with a
// corrupted blob, and that a killed daemon restarts with its content.
func TestContainerdMirror(t *testing.T) {
	t.Parallel()
	for _, flavor := range []Flavor{Flavor16, Flavor2} {
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			requireRoot(t, DefaultRegistryBinary)
			ctx := t.Context()
			log := testLogger(t)
			reg, err := StartRegistry(ctx, RegistryConfig{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, reg.Close) })
			good, err := PushImage(ctx, reg.Addr(), "lab/mirror", "good", 2, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			bad, err := PushImage(ctx, reg.Addr(), "lab/mirror", "bad", 2, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			p, err := StartProxy(ctx, reg.Addr(), ProxyConfig{CorruptBlob: bad.Layers[1], Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, p.Close) })
			c, err := StartContainerd(ctx, ContainerdConfig{Flavor: flavor, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, c.Close) })
			if err := c.WriteHosts(reg.Addr(), Hosts{Server: "http://" + reg.Addr(), Mirrors: []string{p.URL()}}); err != nil {
				t.Fatal(err)
			}

			if err := c.CRIPull(ctx, good.Ref); err != nil {
				t.Fatal(err)
			}
			gets := map[string]int{}
			for _, q := range p.Requests() {
				if ns := q.Query.Get("ns"); ns != reg.Addr() {
					t.Errorf("mirror request %s %s has ns=%q, want %q", q.Method, q.Path, ns, reg.Addr())
				}
				if q.Method == "GET" && q.Digest != "" {
					gets[q.Digest.String()]++
				}
				t.Logf("mirror saw %s %s?%s -> %d", q.Method, q.Path, q.Query.Encode(), q.Status)
			}
			for _, d := range good.Blobs() {
				if gets[d.String()] != 1 {
					t.Errorf("mirror served %s %d times, want 1", d, gets[d.String()])
				}
			}

			// A mirror that sends a blob with the wrong digest fails the
			// pull: containerd does not fall back to the next host.
			err = c.CRIPull(ctx, bad.Ref)
			t.Logf("pull with a corrupted layer from the mirror: %v", err)
			if err == nil {
				t.Error("pull of a corrupted layer succeeded")
			}
			direct, err := reg.BlobGets()
			if err != nil {
				t.Fatal(err)
			}
			// The one GET the registry served is the proxy's: no direct retry.
			if n := direct[bad.Layers[1]]; n != 1 {
				t.Errorf("registry served the corrupted layer %d times, want 1 (through the mirror only)", n)
			}

			// A crash keeps the content: Kill, Start, the image is there.
			c.Kill()
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if ok, err := c.HasImage(ctx, good.Ref); err != nil || !ok {
				t.Errorf("after kill and restart: image present %v, %v", ok, err)
			}
		})
	}
}
