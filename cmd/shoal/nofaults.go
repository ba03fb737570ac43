//go:build !shoalfaults

package main

import (
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/store"
)

// faultOptions is empty in a release build: the fault hooks of the e2e
// suite exist only in a test build (go build -tags shoalfaults), so no flag
// or environment variable can switch them on here.
type faultOptions struct{}

func addFaultFlags(*pflag.FlagSet, *faultOptions) {}

func (faultOptions) content(c p2p.Content, _ *slog.Logger) p2p.Content { return c }

func (faultOptions) blob(b store.Blob) store.Blob { return b }
