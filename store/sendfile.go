package store

import (
	"io"
)

// FileSender is a reader of a blob that can send its next bytes straight from
// the file that holds them. Written to a TCP connection, or to a writer whose
// ReadFrom reaches one (net/http's response does), the bytes go out with
// sendfile(2) and never pass through the process: the mirror serves
// containerd that way from a blob the store holds whole.
type FileSender interface {
	// SendFile writes the next n bytes, or up to the blob's end, to w. ok
	// false means nothing was sent: the bytes are not in a whole file of
	// this store (yet), and the caller reads them instead.
	SendFile(w io.Writer, n int64) (sent int64, ok bool, err error)
}

// SendFile writes n bytes of b from off, or up to its end, to w from the
// file that holds them (see FileSender). ok is false, with nothing sent, for
// a blob that is not a file of an FS.
func SendFile(b Blob, w io.Writer, off, n int64) (sent int64, ok bool, err error) {
	fb, isFile := b.(*fileBlob)
	if !isFile {
		return 0, false, nil
	}
	n = min(n, fb.size-off)
	if n <= 0 {
		return 0, true, nil
	}
	// The file is this blob's own open file, and its other readers use
	// ReadAt, which ignores the offset; sendfile reads from the offset.
	if _, err := fb.f.Seek(off, io.SeekStart); err != nil {
		return 0, true, err
	}
	sent, err = io.Copy(w, &io.LimitedReader{R: fb.f, N: n})
	if err == nil && sent < n {
		err = io.ErrUnexpectedEOF
	}
	return sent, true, err
}

// SendFile sends the reader's next bytes from the stored blob's file when
// the ingest had committed before the reader was made; a reader following
// an ingest still being written reads instead.
func (r *reader) SendFile(w io.Writer, n int64) (int64, bool, error) {
	if !r.reopen || r.err != nil || r.ctx.Err() != nil {
		return 0, false, nil
	}
	if r.blob == nil {
		b, err := r.in.spool.open(r.ctx)
		if err != nil {
			r.err = err
			return 0, false, nil
		}
		r.blob = b
	}
	sent, ok, err := SendFile(r.blob, w, r.off, n)
	r.off += sent
	return sent, ok, err
}
