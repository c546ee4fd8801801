package main

// Checking each (instance, task) on its own, with its own timeout, on a pool of goroutines; a
// partition that porcupine cannot decide in time is "unknown", never "ok". For an illegal one the
// report names the key, every operation of it, one longest linearizable prefix, the lease state it
// leaves and why none of the operations that could come next is legal there.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Blocked is an operation that could come next after the longest prefix, and why it may not.
type Blocked struct {
	Op     string `json:"op"`
	Reason string `json:"reason"`
}

// Violation is one partition that is not linearizable.
type Violation struct {
	Instance   string    `json:"instance"`
	Task       string    `json:"task"`
	Operations []string  `json:"operations"`
	Prefix     []string  `json:"prefix"`
	State      string    `json:"state"`
	Blocked    []Blocked `json:"blocked"`
	HTML       string    `json:"html,omitempty"`
}

// Key names a partition.
type Key struct {
	Instance string `json:"instance"`
	Task     string `json:"task"`
}

// Result of checking every partition.
type Result struct {
	Partitions int         `json:"partitions"`
	Violations []Violation `json:"violations"`
	Unknown    []Key       `json:"unknown"`
	// Largest: the most operations in one partition; Slowest: the longest time one partition took.
	Largest   int   `json:"largestPartition"`
	SlowestMs int64 `json:"slowestPartitionMs"`
}

// CheckAll checks every partition of ops against model, each with the given timeout.
func CheckAll(model porcupine.Model, ops []porcupine.Operation, timeout time.Duration, htmlDir string) Result {
	parts := model.Partition(ops)
	res := Result{Partitions: len(parts), Violations: []Violation{}, Unknown: []Key{}}
	var mu sync.Mutex
	jobs := make(chan []porcupine.Operation)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for part := range jobs {
				part = renumberClients(part)
				started := time.Now()
				verdict := porcupine.CheckOperationsTimeout(model, part, timeout)
				took := time.Since(started).Milliseconds()
				var v *Violation
				if verdict == porcupine.Illegal {
					v = explain(model, part, timeout, htmlDir)
				}
				meta := part[0].Metadata.(Meta)
				mu.Lock()
				res.Largest = max(res.Largest, len(part))
				res.SlowestMs = max(res.SlowestMs, took)
				switch {
				case v != nil:
					res.Violations = append(res.Violations, *v)
				case verdict == porcupine.Unknown:
					res.Unknown = append(res.Unknown, Key{meta.Instance, meta.Task})
				}
				mu.Unlock()
			}
		}()
	}
	for _, p := range parts {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	sort.Slice(res.Violations, func(a, b int) bool {
		x, y := res.Violations[a], res.Violations[b]
		return x.Instance < y.Instance || (x.Instance == y.Instance && x.Task < y.Task)
	})
	sort.Slice(res.Unknown, func(a, b int) bool {
		x, y := res.Unknown[a], res.Unknown[b]
		return x.Instance < y.Instance || (x.Instance == y.Instance && x.Task < y.Task)
	})
	return res
}

// renumberClients makes client ids zero-based per partition (porcupine's visualization wants rows 0..n).
func renumberClients(part []porcupine.Operation) []porcupine.Operation {
	ids := map[int]int{}
	out := make([]porcupine.Operation, len(part))
	for n, op := range part {
		id, ok := ids[op.ClientId]
		if !ok {
			id = len(ids)
			ids[op.ClientId] = id
		}
		op.ClientId = id
		out[n] = op
	}
	return out
}

func describe(op porcupine.Operation) string {
	window := fmt.Sprintf("[%d, %s]", op.Call, fmtTime(op.Return))
	if op.Output.(Output).Outcome == Unknown {
		window = fmt.Sprintf("[%d, no answer]", op.Call)
	}
	return fmt.Sprintf("%s %s", DescribeOperation(op.Input.(Input), op.Output.(Output)), window)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func explain(model porcupine.Model, part []porcupine.Operation, timeout time.Duration, htmlDir string) *Violation {
	meta := part[0].Metadata.(Meta)
	v := &Violation{Instance: meta.Instance, Task: meta.Task, Prefix: []string{}, Blocked: []Blocked{}}
	sorted := append([]porcupine.Operation(nil), part...)
	sort.SliceStable(sorted, func(a, b int) bool { return sorted[a].Call < sorted[b].Call })
	for _, op := range sorted {
		v.Operations = append(v.Operations, describe(op))
	}
	verdict, info := porcupine.CheckOperationsVerbose(model, part, timeout)
	if verdict != porcupine.Illegal {
		// The first check said illegal: a verbose re-check can only time out.
		v.State = "the detailed re-check timed out"
		return v
	}
	// Ids index part: the single partition keeps the order of the operations given.
	var prefix []int
	for _, partition := range info.PartialLinearizations() {
		for _, lin := range partition {
			if len(lin) > len(prefix) {
				prefix = lin
			}
		}
	}
	state := State{}
	done := make([]bool, len(part))
	for _, id := range prefix {
		op := part[id]
		state, _ = Apply(state, op.Input.(Input), op.Output.(Output))
		done[id] = true
		v.Prefix = append(v.Prefix, describe(op))
	}
	v.State = DescribeState(state)
	// The candidates: operations not in the prefix that no other remaining operation precedes in real time.
	var rest []porcupine.Operation
	earliestReturn := Forever
	for id, op := range part {
		if !done[id] {
			rest = append(rest, op)
			earliestReturn = min(earliestReturn, op.Return)
		}
	}
	sort.SliceStable(rest, func(a, b int) bool { return rest[a].Call < rest[b].Call })
	for _, op := range rest {
		if op.Call > earliestReturn {
			continue
		}
		if _, why := Apply(state, op.Input.(Input), op.Output.(Output)); why != "" {
			v.Blocked = append(v.Blocked, Blocked{Op: describe(op), Reason: why})
		}
	}
	if htmlDir != "" {
		path := filepath.Join(htmlDir, unsafeName.ReplaceAllString(meta.Instance+"__"+meta.Task, "_")+".html")
		if err := os.MkdirAll(htmlDir, 0o755); err == nil && porcupine.VisualizePath(model, info, path) == nil {
			v.HTML = path
		}
	}
	return v
}
