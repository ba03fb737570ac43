package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestBenchFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "real-only flag without --real", args: []string{"bench", "--churn", "2"}, wantErr: "--churn needs --real"},
		{name: "candidate without --real", args: []string{"bench", "--candidate", "x=run"}, wantErr: "--candidate needs --real"},
		{name: "bad layer size", args: []string{"bench", "--layer-size", "lots"}, wantErr: "--layer-size"},
		{name: "candidate without a command", args: []string{"bench", "--real", "--candidate", "x"}, wantErr: "want NAME=COMMAND"},
		{name: "model with real", args: []string{"bench", "--model", "--real"}, wantErr: "--real does not go with --model"},
		{name: "model with a candidate", args: []string{"bench", "--model", "--candidates", "direct"}, wantErr: "--candidates does not go with --model"},
		{name: "model with an unknown scenario", args: []string{"bench", "--model", "--scenarios", "outage", "--out", "unused"}, wantErr: "the model mode runs cold, warm, rolling, churn"},
		{name: "setup of no candidate", args: []string{"bench", "--real", "--candidate", "x=run", "--candidate-setup", "y=cfg"}, wantErr: "no --candidate of that name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := newRootCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: %v, want %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestParseCandidates(t *testing.T) {
	t.Parallel()
	got, err := parseCandidates([]string{"a=run a, with a comma", "b=run b"}, []string{"b=setup b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Command != "run a, with a comma" || got[0].Setup != "" || got[1].Setup != "setup b" {
		t.Errorf("parseCandidates = %+v", got)
	}
}

// The model mode runs its four scenarios by default, and prints the
// report's table under its own mode line, and the nodes' times over T*,
// their uploads and what the run cost.
func TestBenchModel(t *testing.T) {
	t.Parallel()
	cmd := newRootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"bench", "--model", "--nodes", "8", "--layers", "2", "--layer-size", "4MiB", "--reps", "1", "--out", t.TempDir()})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err, errOut.String())
	}
	for _, want := range []string{"MODEL: ", "makespan/T*", "cold      shoal", "warm      shoal", "rolling   shoal", "churn     shoal", "p99/T*", "node upload/S", "sim wall time"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in\n%s", want, out.String())
		}
	}
}
