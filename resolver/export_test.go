package resolver

import "time"

// TagRouteName is tagRoute for tests, its answer by name.
func TagRouteName(ttl time.Duration, at time.Time, cached bool, now time.Time, designated string, self bool) string {
	switch tagRoute(ttl, tagEntry{at: at}, cached, now, designated, self) {
	case tagFromCache:
		return "cache"
	case tagAskDesignated:
		return "designated"
	}
	return "registry"
}
