// Command genmanifests renders the Helm chart with its default values into
// the plain manifests under deploy/kubernetes. Run it with `go generate
// ./deploy` or `make manifests`, from the deploy directory.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/shoal-dev/shoal/deploy"
)

func main() {
	if err := deploy.WriteManifests(context.Background(), "."); err != nil {
		fmt.Fprintln(os.Stderr, "genmanifests:", err)
		os.Exit(1)
	}
}
