package lab

import (
	"fmt"

	"github.com/prometheus/procfs"
)

// CPUTimes is the host's CPU time so far, summed over its CPUs, in seconds.
type CPUTimes struct {
	Busy, Total float64
}

// HostCPU reads the host's CPU times from /proc/stat. Every lab process
// (registry, containerd, the candidate's daemons) runs on this host, so
// how busy it was tells whether a run was short of CPU as well as of link.
func HostCPU() (CPUTimes, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return CPUTimes{}, fmt.Errorf("host cpu: %w", err)
	}
	st, err := fs.Stat()
	if err != nil {
		return CPUTimes{}, fmt.Errorf("host cpu: %w", err)
	}
	c := st.CPUTotal
	// Guest time is counted in User already.
	total := c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal
	return CPUTimes{Busy: total - c.Idle - c.Iowait, Total: total}, nil
}

// BusyShare is the share of the CPU time between a and b that was busy, or
// 0 when no time passed.
func BusyShare(a, b CPUTimes) float64 {
	if b.Total <= a.Total {
		return 0
	}
	return min(max((b.Busy-a.Busy)/(b.Total-a.Total), 0), 1)
}
