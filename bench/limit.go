package bench

import (
	"math"

	"golang.org/x/time/rate"
)

// limitBurst is the largest chunk a limiter lets through at once.
const limitBurst = 512 << 10

// newLimiter returns a limiter of bytesPerSec, or nil (unlimited) for 0.
func newLimiter(bytesPerSec float64) *rate.Limiter {
	if bytesPerSec <= 0 || math.IsInf(bytesPerSec, 1) {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), limitBurst)
}
