// Command labpod is the lab cluster's container image: with no arguments it
// waits for SIGTERM or SIGINT, as a pod sandbox ("pause") container does;
// with -listen it also answers GET /ready with 200, for readiness probes,
// once every -require path exists (503 until then). -touch creates a file
// at start.
// It is built static, so its image needs no other file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "labpod:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "", "address to answer GET /ready on; empty serves nothing")
	var require []string
	flag.Func("require", "a path that must exist for /ready to pass (repeatable)", func(p string) error {
		require = append(require, p)
		return nil
	})
	touch := flag.String("touch", "", "a file to create at start")
	flag.Parse()
	if *touch != "" {
		if err := os.WriteFile(*touch, nil, 0o644); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *listen == "" {
		<-ctx.Done()
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		for _, p := range require {
			if _, err := os.Stat(p); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println("labpod: serving /ready on", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
