package deploy_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the container runtime of the
	// real-process tests: re-executed with a sandbox spec, it becomes one
	// container of the rendered pod and never returns.
	if spec := os.Getenv(sandboxEnv); spec != "" {
		if err := runSandbox(spec); err != nil {
			fmt.Fprintln(os.Stderr, "sandbox:", err)
		}
		os.Exit(127)
	}
	goleak.VerifyTestMain(m,
		// klog, which the Kubernetes libraries log through, flushes from
		// a goroutine it starts at init and never stops.
		goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}
