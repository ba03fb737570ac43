package store_test

import (
	"testing"

	"github.com/shoal-dev/shoal/store"
	"github.com/shoal-dev/shoal/store/storetest"
)

func TestMemory(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewMemory() })
}
