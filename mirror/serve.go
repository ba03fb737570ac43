package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

func (h *Handler) serveManifest(w *recorder, r *http.Request, req resolver.ManifestRequest) {
	m, err := h.res.Manifest(r.Context(), req)
	if err != nil {
		h.cfg.Logger.Debug("manifest miss", "registry", req.Registry, "repo", req.Repo, "reference", req.Reference, "err", err)
		writeLookupError(w, r, kindManifest, err)
		return
	}
	hd := w.Header()
	// containerd checks these three exactly; a wrong Content-Type fails the pull.
	hd.Set("Content-Type", m.MediaType)
	hd.Set("Docker-Content-Digest", m.Digest.String())
	hd.Set("Content-Length", strconv.Itoa(len(m.Body)))
	hd.Set("Etag", `"`+m.Digest.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		n, _ := w.Write(m.Body)
		h.m.served.WithLabelValues(string(m.Source)).Add(float64(n))
		// containerd fetches an image manifest only when it lacks the image,
		// and its layers come next: start them all now (a HEAD only
		// resolves a tag, and may be all a pull with the image present does).
		if p, ok := h.res.(Prefetcher); ok {
			p.Prefetch(context.WithoutCancel(r.Context()), req, m)
		}
	}
}

func (h *Handler) serveBlob(w *recorder, r *http.Request, req resolver.BlobRequest) {
	b, err := h.res.Blob(r.Context(), req)
	if err != nil {
		h.cfg.Logger.Debug("blob miss", "registry", req.Registry, "repo", req.Repo, "digest", req.Digest, "err", err)
		writeLookupError(w, r, kindBlob, err)
		return
	}
	if r.Method == http.MethodGet {
		// Commit to a 200 only once bytes can flow: a download that fails
		// before then is a 404, which containerd answers by going to the
		// next host, where a body cut short would fail the pull. A download
		// whose bytes failed verification is tried once more: its sources
		// are avoided now, so the second goes elsewhere.
		for attempt := 0; ; attempt++ {
			// containerd 2.x gives up on a response whose headers take 30 s
			// and fetches the blob from the registry instead: past
			// HeaderWait the 200 goes out and the body follows once the
			// bytes are there.
			rctx, cancel := context.WithTimeout(r.Context(), h.cfg.HeaderWait)
			err = b.Ready(rctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
				// The headers go out now, the body when it can.
				w.flushHeader = true
				err = nil
			}
			if err == nil {
				break
			}
			b.Close()
			h.cfg.Logger.Info("blob download failed before its first byte", "digest", req.Digest, "source", b.Source, "attempt", attempt+1, "err", err)
			if attempt == 0 && errors.Is(err, resolver.ErrDigestMismatch) {
				if b, err = h.res.Blob(r.Context(), req); err == nil {
					continue
				}
			}
			writeLookupError(w, r, kindBlob, fmt.Errorf("blob %s: %w: %w", req.Digest, err, errdefs.ErrNotFound))
			return
		}
	}
	defer b.Close()
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Docker-Content-Digest", b.Digest.String())
	hd.Set("Etag", `"`+b.Digest.String()+`"`)
	rs := &blobSeeker{ctx: r.Context(), blob: b}
	defer rs.Close()
	before := w.bytes
	// Count bytes as they go, so the metric shows a long transfer's progress.
	w.served = h.m.served.WithLabelValues(string(b.Source))
	// http.ServeContent parses Range, answers 206 with Content-Range, 416
	// when unsatisfiable, and HEAD; rangeErrors turns its plain-text 416
	// into an OCI error body.
	sr := r
	if rng, ok := emptySuffixes(r.Header.Get("Range"), b.Size); ok {
		sr = r.Clone(r.Context())
		sr.Header.Set("Range", rng)
	}
	http.ServeContent(&rangeErrors{recorder: w, req: r}, sr, "", time.Time{}, rs)
	w.served = nil
	if rs.err != nil && !errors.Is(rs.err, context.Canceled) {
		h.cfg.Logger.Warn("blob body cut short", "digest", req.Digest, "source", b.Source, "sent", w.bytes-before, "err", rs.err)
	}
}

// emptySuffixes rewrites the suffix ranges of a Range header that select no
// byte ("-0", or any suffix of an empty blob) as "<size>-", a range past the
// end: http.ServeContent answers those with a 206 and an impossible
// Content-Range ("bytes 1000-999/1000"), where RFC 9110 makes them
// unsatisfiable. It reports whether it changed anything.
func emptySuffixes(rng string, size int64) (string, bool) {
	specs, ok := strings.CutPrefix(rng, "bytes=")
	if !ok {
		return rng, false
	}
	parts := strings.Split(specs, ",")
	changed := false
	for i, p := range parts {
		start, end, ok := strings.Cut(textproto.TrimString(p), "-")
		if !ok || textproto.TrimString(start) != "" {
			continue
		}
		end = textproto.TrimString(end)
		if n, err := strconv.ParseInt(end, 10, 64); err == nil && n >= 0 && end[0] != '-' && (n == 0 || size == 0) {
			parts[i] = strconv.FormatInt(size, 10) + "-"
			changed = true
		}
	}
	if !changed {
		return rng, false
	}
	return "bytes=" + strings.Join(parts, ","), true
}

// rangeErrors replaces the body of a 416 answer with an OCI error.
type rangeErrors struct {
	*recorder
	req     *http.Request
	swallow bool
}

func (e *rangeErrors) WriteHeader(code int) {
	if code == http.StatusRequestedRangeNotSatisfiable {
		e.swallow = true
		cr := e.Header().Get("Content-Range")
		writeError(e.recorder, e.req, code, codeRangeInvalid, "range "+e.req.Header.Get("Range")+" not satisfiable (available: "+cr+")")
		return
	}
	e.recorder.WriteHeader(code)
}

// ReadFrom passes the body on to the recorder's ReadFrom, which sends a
// blob held in a file without copying it through the process.
func (e *rangeErrors) ReadFrom(src io.Reader) (int64, error) {
	if e.swallow {
		return io.Copy(io.Discard, src)
	}
	return e.recorder.ReadFrom(src)
}

func (e *rangeErrors) Write(p []byte) (int, error) {
	if e.swallow {
		return len(p), nil
	}
	return e.recorder.Write(p)
}

// blobSeeker adapts a resolver.Blob to the io.ReadSeeker ServeContent wants.
// Reads of a blob still arriving block until its bytes are there.
type blobSeeker struct {
	ctx  context.Context
	blob *resolver.Blob
	off  int64
	rd   io.ReadCloser
	err  error
}

func (s *blobSeeker) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = s.off + offset
	case io.SeekEnd:
		abs = s.blob.Size + offset
	default:
		return 0, errors.New("bad whence")
	}
	if abs < 0 {
		return 0, errors.New("negative offset")
	}
	if abs != s.off && s.rd != nil {
		s.rd.Close()
		s.rd = nil
	}
	s.off = abs
	return abs, nil
}

func (s *blobSeeker) Read(p []byte) (int, error) {
	if s.off >= s.blob.Size {
		return 0, io.EOF
	}
	if s.rd == nil {
		rd, err := s.blob.Reader(s.ctx, s.off)
		if err != nil {
			s.err = err
			return 0, err
		}
		s.rd = rd
	}
	n, err := s.rd.Read(p)
	s.off += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// sendFile sends the next n bytes to w from the store's file that holds
// them (store.FileSender); ok false, with nothing sent, where the blob is
// not in a whole file: then the bytes are read.
func (s *blobSeeker) sendFile(w io.Writer, n int64) (sent int64, ok bool, err error) {
	if s.off >= s.blob.Size {
		return 0, false, nil
	}
	if s.rd == nil {
		rd, err := s.blob.Reader(s.ctx, s.off)
		if err != nil {
			s.err = err
			return 0, false, nil
		}
		s.rd = rd
	}
	fs, isFile := s.rd.(store.FileSender)
	if !isFile {
		return 0, false, nil
	}
	sent, ok, err = fs.SendFile(w, n)
	s.off += sent
	if err != nil {
		s.err = err
	}
	return sent, ok, err
}

func (s *blobSeeker) Close() error {
	if s.rd != nil {
		return s.rd.Close()
	}
	return nil
}
