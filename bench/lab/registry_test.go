package lab

import (
	"io"
	"net/http"
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
