package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
)

// tagLab is a registry host and n nodes (containerd 1.6 and 2.4
// alternating, one shoal each), joined in one mesh.
type tagLab struct{ *meshLab }

func startTagLab(t *testing.T, name, subnet string, n int, extra ...string) *tagLab {
	t.Helper()
	return &tagLab{startMeshLab(t, meshLabConfig{name: name, subnet: subnet, nodes: n, flags: func(int) []string { return extra }})}
}

func (l *tagLab) push(t *testing.T, repo, tag string) lab.Image {
	t.Helper()
	return l.meshLab.push(t, repo, tag, 1, 1<<20)
}

// tagRequests counts the manifest requests by tag (HEAD or GET) for
// repo:tag that shoal and containerd sent the registry, since the first skip
// requests of its log; the test's pushes are left out.
func (l *tagLab) tagRequests(t *testing.T, repo, tag string, skip int) int {
	t.Helper()
	reqs, err := l.reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range reqs[skip:] {
		if q.Repo == repo && q.Reference == tag && (q.Method == http.MethodGet || q.Method == http.MethodHead) && (strings.HasPrefix(q.UserAgent, "shoal/") || strings.HasPrefix(q.UserAgent, "containerd/")) {
			n++
		}
	}
	return n
}

func (l *tagLab) logLen(t *testing.T) int {
	t.Helper()
	reqs, err := l.reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	return len(reqs)
}

// headTag resolves a tag through n's mirror as containerd does (HEAD by
// tag), and returns the digest shoal answers.
func headTag(ctx context.Context, n *meshNode, registry, repo, tag string) (digest.Digest, error) {
	tr := lab.TransportIn(n.host.Netns)
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://127.0.0.1:7500/v2/"+repo+"/manifests/"+tag+"?ns="+registry, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HEAD %s:%s through %s: %d", repo, tag, n.name, resp.StatusCode)
	}
	return digest.Parse(resp.Header.Get("Docker-Content-Digest"))
}

func (l *tagLab) pullAll(t *testing.T, im lab.Image) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range l.nodes {
		wg.Go(func() {
			if err := n.ctrd.CtrPull(t.Context(), im.Ref); err != nil {
				t.Errorf("%s pulls %s: %v", n.name, im.Ref, err)
			}
		})
	}
	wg.Wait()
}

// imageDigest is the digest n's containerd holds for ref.
func imageDigest(t *testing.T, n *meshNode, ref string) digest.Digest {
	t.Helper()
	ims, err := n.ctrd.Images(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range ims {
		if im.Ref == ref {
			return im.Digest
		}
	}
	return ""
}

// TestTagOncePerCluster: eight nodes pulling one tag at once (with
// --tag-ttl 10s) cost the registry one manifest request by tag, and once
// the tag moves upstream every node answers the new digest within the
// TTL and a second.
func TestTagOncePerCluster(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	const ttl = 10 * time.Second
	l := startTagLab(t, "tags", "10.213.44.0/24", 8, "--tag-ttl", ttl.String())
	const repo, tag = "tags/app", "v1"
	first := l.push(t, repo, tag)
	skip := l.logLen(t)
	l.pullAll(t, first)
	if got := l.tagRequests(t, repo, tag, skip); got != 1 {
		t.Errorf("the registry answered %d manifest requests by tag for 8 nodes pulling at once, want 1", got)
	}
	var designated, fromCache, registry float64
	for _, n := range l.nodes {
		if got := imageDigest(t, n, first.Ref); got != first.Digest {
			t.Errorf("%s holds %s as %s, want %s", n.name, first.Ref, got, first.Digest)
		}
		designated += n.metric(t, "shoal_tag_lookups_total", map[string]string{"source": "designated"})
		fromCache += n.metric(t, "shoal_tag_lookups_total", map[string]string{"source": "cache"})
		registry += n.metric(t, "shoal_tag_lookups_total", map[string]string{"source": "registry"})
	}
	t.Logf("tag look-ups of 8 pulls: %v from the designated node, %v from a node's cache, %v from the node's own registry look-up", designated, fromCache, registry)

	// Past the TTL every answer is stale: one node's look-up asks the
	// registry again, and its answer serves every node for the TTL.
	time.Sleep(ttl)
	skip = l.logLen(t)
	if d, err := headTag(t.Context(), l.nodes[0], l.reg.Addr(), repo, tag); err != nil || d != first.Digest {
		t.Fatalf("%s answered %s, %v; want %s", l.nodes[0].name, d, err, first.Digest)
	}
	// The tag moves upstream. Within the TTL every node still answers the
	// registry's last answer, and the registry is not asked; once it has
	// passed, every node answers the new digest, within the TTL and a
	// second of the push.
	second := l.push(t, repo, tag)
	moved := time.Now()
	var wg sync.WaitGroup
	for _, n := range l.nodes {
		wg.Go(func() {
			if d, err := headTag(t.Context(), n, l.reg.Addr(), repo, tag); err != nil || d != first.Digest {
				t.Errorf("%s answered %s, %v within the TTL; want the last answer %s", n.name, d, err, first.Digest)
			}
		})
	}
	wg.Wait()
	if within := time.Since(moved); within < ttl {
		if got := l.tagRequests(t, repo, tag, skip); got != 1 {
			t.Errorf("the registry answered %d manifest requests by tag for 9 look-ups within %v, want 1", got, within.Round(time.Millisecond))
		}
	}
	seen := make([]time.Duration, len(l.nodes))
	for i, n := range l.nodes {
		wg.Go(func() {
			err := lab.WaitFor(t.Context(), n.name+" answers the moved tag", ttl+5*time.Second, func() error {
				d, err := headTag(t.Context(), n, l.reg.Addr(), repo, tag)
				if err != nil {
					return err
				}
				if d != second.Digest {
					return fmt.Errorf("still %s", d)
				}
				return nil
			})
			seen[i] = time.Since(moved)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, n := range l.nodes {
		if seen[i] > ttl+time.Second {
			t.Errorf("%s answered the moved tag %v after the push, want at most %v", n.name, seen[i].Round(time.Millisecond), ttl+time.Second)
		}
	}
	t.Logf("each node answered the moved tag after %v (TTL %v); the registry answered %d manifest requests by tag from the refresh on", seen, ttl, l.tagRequests(t, repo, tag, skip))
	l.pullAll(t, second)
	for _, n := range l.nodes {
		if got := imageDigest(t, n, second.Ref); got != second.Digest {
			t.Errorf("%s holds %s as %s after the move, want %s", n.name, second.Ref, got, second.Digest)
		}
	}
}

// TestTagFromTheMeshByDefault: with no tag flags, while the registry is
// stopped, nodes pull by tag an image one node holds.
func TestTagFromTheMeshByDefault(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	l := startTagLab(t, "tagsdown", "10.213.45.0/24", 3)
	im := l.push(t, "tags/down", "v1")
	if err := l.nodes[0].ctrd.CtrPull(t.Context(), im.Ref); err != nil {
		t.Fatalf("%s pulls: %v", l.nodes[0].name, err)
	}
	waitProvided(t, l.nodes[0], len(im.Blobs())+1)
	before := l.logLen(t)
	l.reg.Stop()
	// Past the default --tag-ttl (5s), no answer of the registry is fresh:
	// the tag must resolve as an outage resolves it.
	time.Sleep(6 * time.Second)
	for _, n := range l.nodes[1:] {
		if err := n.ctrd.CtrPull(t.Context(), im.Ref); err != nil {
			t.Errorf("%s pulls by tag with the registry down: %v", n.name, err)
			continue
		}
		if got := imageDigest(t, n, im.Ref); got != im.Digest {
			t.Errorf("%s holds %s as %s, want %s", n.name, im.Ref, got, im.Digest)
		}
		verifyHolds(t, n.ctrd.ContentDir(), im.Blobs()...)
		if got := n.metric(t, "shoal_tag_lookups_total", map[string]string{"source": "mesh"}); got < 1 {
			t.Errorf("%s resolved %v tags in the mesh, want at least 1", n.name, got)
		}
	}
	if after := l.logLen(t); after != before {
		t.Errorf("the stopped registry's log grew from %d to %d requests", before, after)
	}
}
