package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// host is one endpoint the puller tries, as a hosts.toml entry would name it.
type host struct {
	base   string // http://host:port
	mirror bool   // add ?ns=<registry>, as containerd does for mirrors
}

// puller pulls an image the way containerd does with a hosts.toml: hosts in
// order, the next on a refused connection or any status ≥ 400; a body cut
// short resumes with a Range request from the first host again; every blob
// verified; three blobs at a time.
type puller struct {
	hosts    []host
	registry string // host:port of the registry, for ?ns=
	client   *http.Client
}

func (p *puller) url(h host, path string) string {
	u := h.base + "/v2/" + path
	if h.mirror {
		u += "?ns=" + url.QueryEscape(p.registry)
	}
	return u
}

// get fetches path from the first host that answers, reading from off.
// It returns the body, the host that answered, and the total size.
func (p *puller) get(ctx context.Context, method, path string, accept string, off int64) (io.ReadCloser, http.Header, int, error) {
	var last error
	for i, h := range p.hosts {
		req, err := http.NewRequestWithContext(ctx, method, p.url(h, path), nil)
		if err != nil {
			return nil, nil, 0, err
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if off > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		}
		resp, err := p.client.Do(req)
		if err != nil {
			last = err
			continue
		}
		if resp.StatusCode >= 400 {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			last = fmt.Errorf("%s %s: %s", method, p.url(h, path), resp.Status)
			continue
		}
		if off > 0 && resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			last = fmt.Errorf("%s ignored the range", h.base)
			continue
		}
		return resp.Body, resp.Header, i, nil
	}
	return nil, nil, 0, fmt.Errorf("every host failed: %w", last)
}

const manifestTypes = ocispec.MediaTypeImageManifest + ", application/vnd.docker.distribution.manifest.v2+json"

// pull fetches repo:tag and returns the bytes it downloaded.
func (p *puller) pull(ctx context.Context, repo, tag string) (int64, error) {
	// Resolve: HEAD by tag, then GET the manifest by digest.
	body, hdr, _, err := p.get(ctx, http.MethodHead, repo+"/manifests/"+tag, manifestTypes, 0)
	if err != nil {
		return 0, fmt.Errorf("resolve %s:%s: %w", repo, tag, err)
	}
	body.Close()
	dgst, err := digest.Parse(hdr.Get("Docker-Content-Digest"))
	if err != nil {
		return 0, fmt.Errorf("resolve %s:%s: no digest: %w", repo, tag, err)
	}
	mb, err := p.blob(ctx, repo+"/manifests/", dgst, 4<<20)
	if err != nil {
		return 0, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return 0, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	total := int64(len(mb))
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	sizes := make([]int64, len(blobs))
	for i, d := range blobs {
		g.Go(func() error {
			n, err := p.fetchBlob(gctx, repo, d)
			sizes[i] = n
			return err
		})
	}
	err = g.Wait()
	for _, n := range sizes {
		total += n
	}
	return total, err
}

// blob reads a small object whole and verifies it.
func (p *puller) blob(ctx context.Context, prefix string, dgst digest.Digest, limit int64) ([]byte, error) {
	body, _, _, err := p.get(ctx, http.MethodGet, prefix+dgst.String(), manifestTypes, 0)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit))
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(b) != dgst {
		return nil, fmt.Errorf("%s: digest mismatch", dgst)
	}
	return b, nil
}

// fetchBlob streams a blob to nowhere, verifying it, resuming a cut body.
func (p *puller) fetchBlob(ctx context.Context, repo string, d ocispec.Descriptor) (int64, error) {
	v := d.Digest.Verifier()
	var off int64
	for attempt := 0; attempt < 5 && off < d.Size; attempt++ {
		body, _, _, err := p.get(ctx, http.MethodGet, repo+"/blobs/"+d.Digest.String(), "", off)
		if err != nil {
			return off, fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		n, err := io.Copy(v, body)
		body.Close()
		off += n
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			if ctx.Err() != nil {
				return off, ctx.Err()
			}
		}
		if off < d.Size {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if off != d.Size || !v.Verified() {
		return off, fmt.Errorf("blob %s: got %d of %d bytes, verified %v", d.Digest, off, d.Size, v.Verified())
	}
	return off, nil
}
