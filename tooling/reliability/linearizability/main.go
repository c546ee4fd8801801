// Command linearizability checks a crash soak's recorded history (tooling/reliability/src/recorder.ts)
// with porcupine against a sequential model of one lease with fencing tokens per (instance, task).
// It is independent of the soak's own analysis (src/soak.ts analyze): a second opinion by a
// different method.
//
//	linearizability [-skew 250ms] [-timeout 10s] [-html dir] [-json] <file or directory>...
//
// Exit code: 0 linearizable; 1 a violation, or a partition porcupine could not decide in time
// ("unknown", never reported as ok); 2 bad usage or unreadable input.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// Report is the verdict, printed as JSON with -json.
type Report struct {
	Verdict    string         `json:"verdict"` // ok | violation | unknown
	Events     int            `json:"events"`
	Broken     int            `json:"brokenLines"`
	Operations int            `json:"operations"`
	Pending    int            `json:"pending"`
	Skipped    map[string]int `json:"skipped"`
	SkewMs     int64          `json:"skewMs"`
	TimeoutMs  int64          `json:"timeoutMs"`
	ElapsedMs  int64          `json:"elapsedMs"`
	Result
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("linearizability", flag.ContinueOnError)
	flags.SetOutput(stderr)
	skew := flags.Duration("skew", 250*time.Millisecond, "tolerated difference between the workers' clock and the store's")
	timeout := flags.Duration("timeout", 10*time.Second, "per (instance, task): past it the verdict is unknown")
	htmlDir := flags.String("html", "", "write porcupine's visualization of each violation into this directory")
	asJSON := flags.Bool("json", false, "print the report as one JSON object")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: linearizability [flags] <history file or directory of per-worker logs>...")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() == 0 {
		flags.Usage()
		return 2
	}
	started := time.Now()
	events, broken, err := ReadEvents(flags.Args())
	if err != nil {
		fmt.Fprintln(stderr, "linearizability:", err)
		return 2
	}
	h := BuildHistory(events, skew.Milliseconds())
	result := CheckAll(LeaseModel(), h.Ops, *timeout, *htmlDir)
	report := Report{
		Verdict:    "ok",
		Events:     h.Events,
		Broken:     broken,
		Operations: len(h.Ops),
		Pending:    h.Pending,
		Skipped:    h.Skipped,
		SkewMs:     skew.Milliseconds(),
		TimeoutMs:  timeout.Milliseconds(),
		Result:     result,
	}
	switch {
	case len(result.Violations) > 0:
		report.Verdict = "violation"
	case len(result.Unknown) > 0:
		report.Verdict = "unknown"
	}
	report.ElapsedMs = time.Since(started).Milliseconds()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(report); err != nil {
			fmt.Fprintln(stderr, "linearizability:", err)
			return 2
		}
	} else {
		printText(stdout, report)
	}
	if report.Verdict == "ok" {
		return 0
	}
	return 1
}

func printText(w io.Writer, r Report) {
	fmt.Fprintf(w, "linearizability: %s: %d events, %d operations (%d without answer) in %d (instance, task) partitions, largest %d, skew %d ms, %d ms\n",
		r.Verdict, r.Events, r.Operations, r.Pending, r.Partitions, r.Largest, r.SkewMs, r.ElapsedMs)
	for reason, n := range r.Skipped {
		fmt.Fprintf(w, "  not modelled: %d x %s\n", n, reason)
	}
	for _, k := range r.Unknown {
		fmt.Fprintf(w, "UNKNOWN %s / %s: not decided within %d ms\n", k.Instance, k.Task, r.TimeoutMs)
	}
	for _, v := range r.Violations {
		fmt.Fprintf(w, "VIOLATION %s / %s\n", v.Instance, v.Task)
		for _, b := range v.Blocked {
			fmt.Fprintf(w, "  cannot come next: %s: %s\n", b.Op, b.Reason)
		}
		fmt.Fprintf(w, "  after the longest linearizable prefix (%d operations) the lease is: %s\n", len(v.Prefix), v.State)
		fmt.Fprintln(w, "  operations, by call time:")
		for _, op := range v.Operations {
			fmt.Fprintf(w, "    %s\n", op)
		}
		if v.HTML != "" {
			fmt.Fprintf(w, "  visualization: %s\n", v.HTML)
		}
	}
}
