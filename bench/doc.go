// Package bench measures what shoal saves: registry egress and pull times
// when many nodes pull one image, against pulling straight from the
// registry, in the same run. The simulated mode runs everything in this
// process on loopback, with rate limiters standing in for shaped links; the
// real mode (RunReal) runs a docker-registry, a containerd per node and the
// candidate mirrors as real processes in network namespaces whose links tc
// shapes, and counts bytes with the registry's log and the interfaces.
package bench
