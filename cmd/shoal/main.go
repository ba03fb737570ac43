// Command shoal is the shoal daemon and its tools: one binary with the
// daemon, containerd configuration, the benchmark and status subcommands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	// The container image has no CA bundle; these roots are used only
	// where the host has none, so upstream TLS works in the image too.
	_ "golang.org/x/crypto/x509roots/fallback"
)

func main() {
	if err := run(); err != nil {
		// One line, whatever the error is made of.
		fmt.Fprintln(os.Stderr, "shoal:", strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return newRootCommand().ExecuteContext(ctx)
}
