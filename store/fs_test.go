package store_test

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-dev/shoal/store"
	"github.com/shoal-dev/shoal/store/storetest"
)

func TestFS(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return newFS(t, t.TempDir(), 0) })
}

func newFS(t *testing.T, dir string, maxBytes int64) *store.FS {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.MaxBytes = maxBytes
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := store.NewFS(dir, cfg)
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	return s
}

func testBlob(seed uint64, n int) ([]byte, digest.Digest) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, digest.FromBytes(b)
}

// begin starts an ingest that is aborted when the test ends unless committed.
func begin(t *testing.T, s store.Store, data []byte, dgst digest.Digest) store.Ingest {
	t.Helper()
	in, err := s.Begin(t.Context(), dgst, int64(len(data)))
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	t.Cleanup(func() { in.Abort(nil) })
	if _, err := in.WriteAt(data, 0); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	return in
}

func put(t *testing.T, s store.Store, data []byte, dgst digest.Digest) {
	t.Helper()
	if err := begin(t, s, data, dgst).Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func readAll(t *testing.T, b store.Blob) []byte {
	t.Helper()
	got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if err != nil {
		t.Fatalf("read blob: %v", err)
	}
	return got
}

func exists(t *testing.T, s store.Store, dgst digest.Digest) bool {
	t.Helper()
	_, err := s.Stat(t.Context(), dgst)
	if err != nil && !errdefs.IsNotFound(err) {
		t.Fatalf("Stat(%s): %v", dgst, err)
	}
	return err == nil
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFSLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newFS(t, dir, 0)
	data, dgst := testBlob(1, 1000)
	in := begin(t, s, data, dgst)
	if got := dirNames(t, filepath.Join(dir, "ingest")); len(got) != 1 {
		t.Errorf("ingest/ during ingest = %v, want one spool", got)
	}
	if err := in.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, filepath.Join(dir, "ingest")); len(got) != 0 {
		t.Errorf("ingest/ after commit = %v", got)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", dgst.Encoded()))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Errorf("blob file: %d bytes, %v", len(onDisk), err)
	}

	other, otherDgst := testBlob(2, 10)
	begin(t, s, other, otherDgst).Abort(nil)
	if got := dirNames(t, filepath.Join(dir, "ingest")); len(got) != 0 {
		t.Errorf("ingest/ after abort = %v", got)
	}
	if n, size := s.Usage(); n != 1 || size != 1000 {
		t.Errorf("Usage = %d, %d; want 1, 1000", n, size)
	}
}

// What a crash leaves in ingest/ is deleted on start and never served, even
// when it is complete and would verify.
func TestFSRestartRemovesLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newFS(t, dir, 0)
	data, dgst := testBlob(3, 1000)
	begin(t, s, data, dgst) // complete, never committed: the process "crashes"
	partial, partialDgst := testBlob(4, 1000)
	stray := filepath.Join(dir, "ingest", partialDgst.Encoded())
	if err := os.WriteFile(stray, partial[:300], 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := newFS(t, dir, 0)
	if got := dirNames(t, filepath.Join(dir, "ingest")); len(got) != 0 {
		t.Errorf("ingest/ after restart = %v", got)
	}
	for _, d := range []digest.Digest{dgst, partialDgst} {
		if exists(t, s2, d) {
			t.Errorf("%s served after restart", d)
		}
	}
	if n, _ := s2.Usage(); n != 0 {
		t.Errorf("Usage counts %d blobs", n)
	}
	put(t, s2, data, dgst) // and it can be fetched again
}

func TestFSRestartKeepsBlobs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newFS(t, dir, 0)
	a, aDgst := testBlob(5, 1000)
	b, bDgst := testBlob(6, 2000)
	put(t, s, a, aDgst)
	put(t, s, b, bDgst)
	junk := filepath.Join(dir, "blobs", "sha256", "not-a-digest")
	if err := os.WriteFile(junk, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := newFS(t, dir, 0)
	for _, tt := range []struct {
		data []byte
		dgst digest.Digest
	}{{a, aDgst}, {b, bDgst}} {
		blob, err := s2.Open(t.Context(), tt.dgst)
		if err != nil {
			t.Fatalf("Open after restart: %v", err)
		}
		if got := readAll(t, blob); !bytes.Equal(got, tt.data) {
			t.Errorf("%s: content differs after restart", tt.dgst)
		}
		blob.Close()
	}
	if n, size := s2.Usage(); n != 2 || size != 3000 {
		t.Errorf("Usage = %d, %d; want 2, 3000", n, size)
	}
}

func TestFSEviction(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir(), 3000)
	blobs := make(map[string]digest.Digest)
	add := func(name string, seed uint64, size int) {
		data, dgst := testBlob(seed, size)
		blobs[name] = dgst
		put(t, s, data, dgst)
	}
	use := func(name string) {
		b, err := s.Open(t.Context(), blobs[name])
		if err != nil {
			t.Fatalf("Open %s: %v", name, err)
		}
		b.Close()
	}
	steps := []struct {
		name    string
		do      func()
		present []string
		absent  []string
		bytes   int64
	}{
		{name: "fill to the cap", do: func() { add("a", 10, 1000); add("b", 11, 1000); add("c", 12, 1000) },
			present: []string{"a", "b", "c"}, bytes: 3000},
		{name: "use a, add d: b goes", do: func() { use("a"); add("d", 13, 1000) },
			present: []string{"a", "c", "d"}, absent: []string{"b"}, bytes: 3000},
		{name: "add big e: the two oldest go", do: func() { add("e", 14, 2000) },
			present: []string{"d", "e"}, absent: []string{"a", "c"}, bytes: 3000},
		{name: "add f over the cap alone: all else goes, f stays", do: func() { add("f", 15, 5000) },
			present: []string{"f"}, absent: []string{"d", "e"}, bytes: 5000},
		{name: "next commit evicts f", do: func() { add("g", 16, 10) },
			present: []string{"g"}, absent: []string{"f"}, bytes: 10},
	}
	for _, st := range steps {
		st.do()
		for _, name := range st.present {
			if !exists(t, s, blobs[name]) {
				t.Errorf("%s: %s evicted", st.name, name)
			}
		}
		for _, name := range st.absent {
			if exists(t, s, blobs[name]) {
				t.Errorf("%s: %s kept", st.name, name)
			}
		}
		if _, bytes := s.Usage(); bytes != st.bytes {
			t.Errorf("%s: Usage bytes = %d, want %d", st.name, bytes, st.bytes)
		}
	}
}

// Last use survives a restart through the files' mtimes, and a lower cap
// applies at start.
func TestFSEvictionOrderSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newFS(t, dir, 0)
	base := time.Now().Add(-time.Hour)
	var dgsts []digest.Digest
	for i, age := range []time.Duration{3, 1, 2} { // minutes after base: b oldest
		data, dgst := testBlob(uint64(20+i), 1000)
		put(t, s, data, dgst)
		mtime := base.Add(age * time.Minute)
		if err := os.Chtimes(filepath.Join(dir, "blobs", "sha256", dgst.Encoded()), mtime, mtime); err != nil {
			t.Fatal(err)
		}
		dgsts = append(dgsts, dgst)
	}

	s2 := newFS(t, dir, 2000)
	for i, want := range []bool{true, false, true} {
		if got := exists(t, s2, dgsts[i]); got != want {
			t.Errorf("blob %d present = %v, want %v", i, got, want)
		}
	}
}

// An open blob stays readable after eviction, and so does a reader that
// followed its ingest.
func TestFSEvictedWhileOpen(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir(), 1000)
	data, dgst := testBlob(30, 1000)
	in := begin(t, s, data, dgst)
	r := in.Reader(t.Context(), 0)
	defer r.Close()
	if err := in.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, err := s.Open(t.Context(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	other, otherDgst := testBlob(31, 1000)
	put(t, s, other, otherDgst)
	if exists(t, s, dgst) {
		t.Fatal("blob not evicted")
	}
	if got := readAll(t, b); !bytes.Equal(got, data) {
		t.Error("open blob unreadable after eviction")
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("following reader after eviction: %d bytes, %v", len(got), err)
	}
	late := in.Reader(t.Context(), 0)
	defer late.Close()
	_, err = io.ReadAll(late)
	if !errdefs.IsNotFound(err) {
		t.Errorf("reader opened after eviction: %v, want not found", err)
	}
}

func TestFSConfig(t *testing.T) {
	t.Parallel()
	_, err := store.NewFS(t.TempDir(), store.Config{MaxBytes: -1})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("NewFS with negative MaxBytes: %v", err)
	}
}

// TestFSNeverEvictsPinned fills a capped store past its cap over and over
// again: the pinned blobs stay, counted in the cap, and only the others
// make room; once unpinned, a pinned blob is evicted like any other.
func TestFSNeverEvictsPinned(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir(), 3000)
	pa, da := testBlob(30, 1000)
	pb, db := testBlob(31, 1000)
	s.SetPinned([]digest.Digest{da, db})
	put(t, s, pa, da)
	put(t, s, pb, db)
	var last digest.Digest
	for i := range 10 {
		data, dgst := testBlob(uint64(40+i), 700)
		put(t, s, data, dgst)
		if last != "" && exists(t, s, last) {
			t.Errorf("round %d: the unpinned blob before is kept, over the cap", i)
		}
		last = dgst
		for _, d := range []digest.Digest{da, db} {
			if !exists(t, s, d) {
				t.Fatalf("round %d: pinned blob %s evicted", i, d)
			}
		}
		if _, bytes := s.Usage(); bytes != 2700 {
			t.Errorf("round %d: Usage bytes = %d, want 2700", i, bytes)
		}
	}
	if n, bytes := s.PinnedUsage(); n != 2 || bytes != 2000 {
		t.Errorf("PinnedUsage = %d blobs, %d bytes; want 2, 2000", n, bytes)
	}
	s.SetPinned([]digest.Digest{db})
	data, dgst := testBlob(60, 1500)
	put(t, s, data, dgst)
	if exists(t, s, da) || !exists(t, s, db) || !exists(t, s, dgst) {
		t.Errorf("after unpinning a: a kept %v, b kept %v, new kept %v; want false, true, true", exists(t, s, da), exists(t, s, db), exists(t, s, dgst))
	}
}
