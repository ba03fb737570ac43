package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/prometheus/procfs"
)

// ErrNoProcess reports a pid that names no running process.
var ErrNoProcess = errors.New("no such process")

// userHZ is the unit of the times in /proc/<pid>/stat: the kernel reports
// them in USER_HZ ticks, 100 a second on every architecture it still builds.
const userHZ = 100

// ProcTimes is the CPU time a process, or a process group, has used so far.
type ProcTimes struct {
	// Pid is the process, or the group's leader.
	Pid int
	// Start is when that process started, in ticks after boot. A pid the
	// kernel gave to a later process, after the first one ended, has
	// another Start.
	Start uint64
	// Seconds is user plus system time, the process's own and that of the
	// children it has waited for.
	Seconds float64
}

// Same says whether a and b were read from the same process: the same pid
// and the same start.
func (a ProcTimes) Same(b ProcTimes) bool {
	return a.Pid > 0 && a.Pid == b.Pid && a.Start == b.Start
}

// ProcessCPU reads the CPU time of process pid from /proc/<pid>/stat. A pid
// that names no process is ErrNoProcess.
func ProcessCPU(pid int) (ProcTimes, error) {
	fsys, err := procfs.NewDefaultFS()
	if err != nil {
		return ProcTimes{}, fmt.Errorf("process %d cpu: %w", pid, err)
	}
	st, err := procStat(fsys, pid)
	if err != nil {
		return ProcTimes{}, err
	}
	return ProcTimes{Pid: pid, Start: st.Starttime, Seconds: seconds(st)}, nil
}

// GroupCPU reads the CPU time of every process in the process group that
// pgid leads. A --candidate runs as `sh -c COMMAND`, and the shell forks
// the mirror: the leader's own time would be the shell's. Each member's
// time includes the children it has waited for, and no member's children
// are counted twice: a child's time moves to its parent only once it ends.
// A leader that is gone is ErrNoProcess, even if members of its group live
// on.
func GroupCPU(pgid int) (ProcTimes, error) {
	fsys, err := procfs.NewDefaultFS()
	if err != nil {
		return ProcTimes{}, fmt.Errorf("process group %d cpu: %w", pgid, err)
	}
	leader, err := procStat(fsys, pgid)
	if err != nil {
		return ProcTimes{}, err
	}
	if leader.PGRP != pgid {
		return ProcTimes{}, fmt.Errorf("process %d leads no process group (its group is %d)", pgid, leader.PGRP)
	}
	procs, err := fsys.AllProcs()
	if err != nil {
		return ProcTimes{}, fmt.Errorf("process group %d cpu: %w", pgid, err)
	}
	t := ProcTimes{Pid: pgid, Start: leader.Starttime}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil || st.PGRP != pgid {
			// A process that ended since the listing belongs to no group
			// now; its time is in its parent's if the parent reaped it.
			continue
		}
		t.Seconds += seconds(st)
	}
	return t, nil
}

func procStat(fsys procfs.FS, pid int) (procfs.ProcStat, error) {
	p, err := fsys.Proc(pid)
	if err == nil {
		var st procfs.ProcStat
		if st, err = p.Stat(); err == nil {
			return st, nil
		}
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return procfs.ProcStat{}, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	return procfs.ProcStat{}, fmt.Errorf("process %d cpu: %w", pid, err)
}

func seconds(st procfs.ProcStat) float64 {
	return float64(int64(st.UTime)+int64(st.STime)+int64(st.CUTime)+int64(st.CSTime)) / userHZ
}
