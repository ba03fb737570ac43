package lab

import (
	"context"
	"fmt"
	"time"
)

// WaitFor polls cond until it returns nil, ctx ends or timeout passes, and
// then returns cond's last error, prefixed with what.
func WaitFor(ctx context.Context, what string, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
