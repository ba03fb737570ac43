// Package bench measures what shoal saves: registry egress and pull times
// when many nodes pull one image, against pulling straight from the
// registry, in the same run. The simulated mode runs everything in this
// process on loopback, with rate limiters standing in for shaped links.
package bench
