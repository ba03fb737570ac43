package lab

import (
	"runtime"
	"testing"
	"time"
)

func TestHostCPU(t *testing.T) {
	a, err := HostCPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.Total <= 0 || a.Busy < 0 || a.Busy > a.Total {
		t.Fatalf("host cpu %+v: want 0 <= busy <= total, total > 0", a)
	}
	// Keep every CPU busy for a while: the share measured over that time
	// must show it. The kernel counts in ticks of 10 ms.
	stop := time.Now().Add(300 * time.Millisecond)
	done := make(chan struct{})
	for range runtime.NumCPU() {
		go func() {
			for time.Now().Before(stop) {
			}
			done <- struct{}{}
		}()
	}
	for range runtime.NumCPU() {
		<-done
	}
	b, err := HostCPU()
	if err != nil {
		t.Fatal(err)
	}
	if got := BusyShare(a, b); got < 0.5 {
		t.Errorf("busy share %.2f while every CPU spun, want most of the time", got)
	}
	if got := BusyShare(b, a); got != 0 {
		t.Errorf("busy share backwards %.2f, want 0", got)
	}
}
