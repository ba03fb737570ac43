package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// serveWeb serves the daemon's status page, from its status address, on
// listen (a local port), prints the URL to out, and blocks until ctx
// ends. The daemon's address may be one only this machine reaches (a
// loopback in a pod, a namespace): the page follows wherever this
// command's port is forwarded.
func serveWeb(ctx context.Context, out io.Writer, addr, listen string) error {
	target, err := url.Parse(statusURL(addr, ""))
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if err := checkPage(ctx, target.String()); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := smallServer(httputil.NewSingleHostReverseProxy(target))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintf(out, "status page of the daemon at %s: http://%s/ (Ctrl-C to stop)\n", addr, ln.Addr())
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// checkPage makes sure the daemon at base serves the status page.
func checkPage(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/live", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("daemon unreachable at %s: %w (is `shoal daemon` running with this --status-addr?)", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNoPage
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("daemon at %s answered %s", base, resp.Status)
	}
	return nil
}
