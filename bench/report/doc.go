// Package report turns the records of a `shoal bench` session into what a
// reader sees: the table on the terminal, results.json, and an HTML report with
// charts drawn by gonum/plot. It runs nothing and measures nothing; the code
// that drives the benchmark fills the [Record] values.
//
// Every figure is a ratio against a physical limit: registry egress over the
// image size S, and the slowest node's time over the bound T* ([ColdBound],
// [WarmBound]), whose derivation docs/benchmarks.md gives.
package report
