//go:build !shoalfaults

package main

import "testing"

// TestReleaseBuildHasNoFaultHooks: built without the shoalfaults tag, as a
// release is, the daemon has no fault flag, so neither a flag nor its
// SHOAL_ variable can switch a fault on.
func TestReleaseBuildHasNoFaultHooks(t *testing.T) {
	t.Parallel()
	cmd := newDaemonCommand()
	if f := cmd.Flags().Lookup("fault-corrupt-uploads"); f != nil {
		t.Fatalf("the release build has --%s", f.Name)
	}
	var o faultOptions
	c := &localContent{}
	if got := o.content(c, nil); got != c {
		t.Fatalf("the release build wraps served content in %T", got)
	}
}
