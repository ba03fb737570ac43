package lab

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	t.Parallel()
	requireRoot(t, DefaultRegistryBinary)
	ctx := t.Context()
	r, err := StartRegistry(ctx, RegistryConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	im, err := PushImage(ctx, r.Addr(), "lab/reg", "v1", 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Layers) != 2 || im.LayerSizes[0] != 1<<20 {
		t.Fatalf("image %+v: want 2 layers of 1 MiB", im)
	}
	if im.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("media type %s", im.MediaType)
	}

	// A restart keeps storage and address.
	r.Stop()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Blobs() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Addr()+"/v2/lab/reg/blobs/"+d.String(), nil)
		req.Header.Set("User-Agent", "lab-test")
		resp, err := testClient(t, "").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s after restart: %s", d, resp.Status)
		}
	}

	reqs, err := r.Requests()
	if err != nil {
		t.Fatal(err)
	}
	var puts, heads int
	for _, q := range reqs {
		switch {
		case q.Method == http.MethodPut && q.Path == "/v2/lab/reg/manifests/v1":
			puts++
			if q.Status != http.StatusCreated {
				t.Errorf("manifest PUT status %d", q.Status)
			}
		case q.Method == http.MethodHead:
			heads++
		}
		if q.UserAgent == readyAgent {
			t.Errorf("readiness probe in Requests: %+v", q)
		}
		if q.Time.IsZero() || q.Status == 0 || q.RemoteAddr == "" {
			t.Errorf("incomplete request %+v", q)
		}
	}
	if puts != 1 {
		t.Errorf("%d manifest PUTs, want 1; log: %+v", puts, reqs)
	}
	gets, err := r.BlobGets()
	if err != nil {
		t.Fatal(err)
	}
	bytes, err := r.BlobBytes()
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range im.Layers {
		if gets[d] != 1 || bytes[d] != im.LayerSizes[i] {
			t.Errorf("layer %s: %d GETs, %d bytes; want 1, %d", d, gets[d], bytes[d], im.LayerSizes[i])
		}
	}
	if gets[im.Config] != 1 {
		t.Errorf("config: %d GETs", gets[im.Config])
	}
}

// TestRegistryTLS: a registry serves HTTPS from a test-made CA and asks
// for a client certificate; another, a pull-through cache of it, serves
// what it holds.
func TestRegistryTLS(t *testing.T) {
	t.Parallel()
	requireRoot(t, DefaultRegistryBinary)
	ctx := t.Context()
	dir := t.TempDir()
	ca, err := NewCA("lab test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueFiles(dir, "server", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := ca.IssueFiles(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.ClientTLS(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	r, err := StartRegistry(ctx, RegistryConfig{Logger: testLogger(t), TLS: &RegistryTLS{CertFile: cert, KeyFile: key, ClientCAFile: caFile, Client: client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if !strings.HasPrefix(r.URL(), "https://") {
		t.Fatalf("URL %s", r.URL())
	}
	im, err := PushImage(ctx, r.Addr(), "lab/tls", "v1", 1, 4096, WithTransport(r.Transport()))
	if err != nil {
		t.Fatal(err)
	}
	get := func(tc *tls.Config) error {
		tr := TransportIn("")
		tr.TLSClientConfig = tc
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(r.URL() + "/v2/lab/tls/blobs/" + im.Layers[0].String())
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if err := get(client); err != nil {
		t.Fatalf("with the client certificate: %v", err)
	}
	noCert, _ := ca.ClientTLS("", "")
	if err := get(noCert); err == nil {
		t.Fatal("served without a client certificate")
	}
	if err := get(&tls.Config{}); err == nil {
		t.Fatal("trusted without the CA")
	}

	origin, err := StartRegistry(ctx, RegistryConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = origin.Close() })
	im2, err := PushImage(ctx, origin.Addr(), "lab/proxied", "v1", 1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := StartRegistry(ctx, RegistryConfig{Logger: testLogger(t), ProxyRemote: origin.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	resp, err := testClient(t, "").Get(proxy.URL() + "/v2/lab/proxied/blobs/" + im2.Layers[0].String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("through the pull-through cache: %s", resp.Status)
	}
}
