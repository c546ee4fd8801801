package main

// Reading the soak's history (src/recorder.ts: one JSON line per event, per worker or merged) and
// turning it into porcupine operations. The recorder logs what a worker learnt; this file decides
// what each event means for the lease, conservatively: whatever the worker could not know (a call
// that never answered, an error that says nothing) becomes an operation of unknown outcome that may
// take effect at any time after its call.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Event is one recorded line (the RecordedEvent union of src/recorder.ts, plus "cancel").
type Event struct {
	K    string   `json:"k"`
	W    string   `json:"w"`
	I    string   `json:"i"`
	T    *string  `json:"t"`
	Tok  *float64 `json:"tok"`
	Ca   *float64 `json:"ca"`
	Ea   *float64 `json:"ea"`
	D    *float64 `json:"d"`
	Q    float64  `json:"q"`
	R    *float64 `json:"r"`
	Op   string   `json:"op"`
	Ok   *bool    `json:"ok"`
	Code *string  `json:"code"`
	line string
}

// ReadEvents reads JSON lines from files and directories (their *.log and *.jsonl files, not recursive).
// A line that does not parse (cut by SIGKILL mid-write) is counted and skipped.
func ReadEvents(paths []string) (events []Event, broken int, err error) {
	var files []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, 0, err
		}
		if !info.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range entries {
			// The recorder's per-worker logs (<worker>.log) or merged histories; not the loops' .log.loop.
			name := e.Name()
			if e.Type().IsRegular() && (strings.HasSuffix(name, ".log") || strings.HasSuffix(name, ".jsonl")) {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, 0, err
		}
		b, err := readLines(fh, &events)
		fh.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", f, err)
		}
		broken += b
	}
	return events, broken, nil
}

func readLines(r io.Reader, events *[]Event) (broken int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		text := sc.Bytes()
		if len(text) == 0 {
			continue
		}
		var e Event
		if json.Unmarshal(text, &e) != nil || e.K == "" {
			broken++
			continue
		}
		e.line = string(text)
		*events = append(*events, e)
	}
	return broken, sc.Err()
}

// History is the operations built from the events, with counts for the report.
type History struct {
	Ops      []porcupine.Operation
	Events   int
	Pending  int            // operations of unknown outcome (open-ended windows)
	Skipped  map[string]int // events that are not part of the model, by reason
	Horizon  int64          // the "never answered" return time: after every recorded time
	MaxDurMs int64          // the duration assumed for an extension whose event does not say
}

type pairKey struct {
	w, i, t string
	q       int64
}

func ms(v float64) int64 { return int64(math.Round(v)) }

// Definite refusals of a commit that say nothing about the lease: nothing was written, nothing released.
var noEffect = map[string]bool{"CONFLICT": true, "NOT_FOUND": true, "VALIDATION": true, "PAYLOAD_TOO_LARGE": true, "SERIALIZATION": true}

// BuildHistory turns events into operations for the lease model, with the given skew tolerance (ms).
func BuildHistory(events []Event, skew int64) *History {
	h := &History{Events: len(events), Skipped: map[string]int{}}
	clients := map[string]int{}
	client := func(w string) int {
		if n, ok := clients[w]; ok {
			return n
		}
		clients[w] = len(clients)
		return clients[w]
	}
	var latest int64
	for _, e := range events {
		latest = max(latest, ms(e.Q))
		if e.R != nil {
			latest = max(latest, ms(*e.R))
		}
		if e.K == "extend" && e.D != nil {
			h.MaxDurMs = max(h.MaxDurMs, ms(*e.D))
		}
		if e.K == "claim" && e.Ea != nil && e.Ca != nil {
			h.MaxDurMs = max(h.MaxDurMs, ms(*e.Ea-*e.Ca))
		}
	}
	h.Horizon = latest + 1
	add := func(e Event, in Input, out Output, source string) {
		q := ms(e.Q)
		ret := h.Horizon
		in.Lo = q - skew
		in.Hi = Forever
		if out.Outcome == Unknown {
			h.Pending++
		} else {
			ret = ms(*e.R)
			in.Hi = ret + skew
		}
		h.Ops = append(h.Ops, porcupine.Operation{
			ClientId: client(in.Worker),
			Input:    in,
			Call:     q,
			Output:   out,
			Return:   ret,
			Metadata: Meta{Instance: e.I, Task: *e.T, Source: source},
		})
	}
	releaseReqs := map[pairKey][]Event{}
	releases := map[pairKey][]Event{}
	results := map[pairKey][]int{} // fenced writes that may release (commits), by index in events
	usedWrite := map[int]bool{}
	cancels := []Event{}
	tasksOf := map[string]map[string]bool{} // instance -> tasks seen
	for _, e := range events {
		if e.T != nil {
			if tasksOf[e.I] == nil {
				tasksOf[e.I] = map[string]bool{}
			}
			tasksOf[e.I][*e.T] = true
		}
	}
	for n, e := range events {
		if e.K == "cancel" {
			cancels = append(cancels, e)
			continue
		}
		if e.T == nil {
			h.Skipped["unfenced or task-less write"]++
			continue
		}
		k := pairKey{e.W, e.I, *e.T, ms(e.Q)}
		switch e.K {
		case "claim":
			if e.Tok == nil || e.R == nil {
				h.Skipped["claim without token"]++
				continue
			}
			out := Output{Outcome: Done, Token: ms(*e.Tok), Expires: Forever, At: NoStamp}
			if e.Ea != nil {
				out.Expires = ms(*e.Ea)
			}
			if e.Ca != nil {
				out.At = ms(*e.Ca)
			}
			add(e, Input{Kind: OpClaim, Worker: e.W}, out, e.line)
		case "extend":
			if e.Tok == nil || e.R == nil {
				h.Skipped["extend without token"]++
				continue
			}
			out := Output{Outcome: Done, Token: ms(*e.Tok), Expires: Forever, At: NoStamp}
			if e.Ea != nil {
				out.Expires = ms(*e.Ea)
				if e.D != nil {
					out.At = ms(*e.Ea - *e.D)
				}
			}
			add(e, Input{Kind: OpExtend, Worker: e.W}, out, e.line)
		case "extend-fail":
			code := ""
			if e.Code != nil {
				code = *e.Code
			}
			if code == "CLAIM_LOST" || code == "NOT_FOUND" {
				add(e, Input{Kind: OpExtend, Worker: e.W}, Output{Outcome: Refused}, e.line)
			} else {
				add(e, Input{Kind: OpExtend, Worker: e.W, Dur: h.MaxDurMs}, Output{Outcome: Unknown}, e.line)
			}
		case "release-req":
			releaseReqs[k] = append(releaseReqs[k], e)
		case "release":
			releases[k] = append(releases[k], e)
		case "write":
			if e.Tok == nil {
				h.Skipped["unfenced or task-less write"]++
				continue
			}
			if e.Op != "snapshot" { // completeTasks items ("result") and failTasks items ("fail") release their claim
				results[k] = append(results[k], n)
			}
		default:
			h.Skipped["kind "+e.K]++
		}
	}
	// A release that answered: a commit (completeTasks logs the item's write and release with the same
	// q and r) or a releaseTaskClaim. Either way it answers one release request.
	for k, list := range releases {
		for _, rel := range list {
			if reqs := releaseReqs[k]; len(reqs) > 0 {
				releaseReqs[k] = reqs[1:]
			}
			commit := -1
			for _, n := range results[k] {
				w := events[n]
				if !usedWrite[n] && w.Ok != nil && *w.Ok && w.R != nil && ms(*w.R) == ms(*rel.R) {
					commit = n
					break
				}
			}
			if commit < 0 {
				add(rel, Input{Kind: OpRelease, Worker: rel.W}, Output{Outcome: Done}, rel.line)
				continue
			}
			usedWrite[commit] = true
			w := events[commit]
			add(w, Input{Kind: OpCommit, Worker: w.W, Token: ms(*w.Tok)}, Output{Outcome: Done}, w.line+"\n"+rel.line)
		}
	}
	// A failed completeTasks item answers its release request too: refused (nothing released) or unknown.
	for k, list := range results {
		for _, n := range list {
			w := events[n]
			if usedWrite[n] || w.Ok == nil || *w.Ok || len(releaseReqs[k]) == 0 {
				continue
			}
			releaseReqs[k] = releaseReqs[k][1:]
			usedWrite[n] = true
			code := ""
			if w.Code != nil {
				code = *w.Code
			}
			in := Input{Kind: OpCommit, Worker: w.W, Token: ms(*w.Tok)}
			switch {
			case code == "CLAIM_LOST":
				add(w, in, Output{Outcome: Refused}, w.line)
			case noEffect[code]:
				h.Skipped["commit refused for another reason"]++
			default:
				add(w, in, Output{Outcome: Unknown}, w.line)
			}
		}
	}
	// The other fenced writes: landed, refused, or nothing known (dropped: a write changes no lease).
	for n, e := range events {
		if e.K != "write" || e.Tok == nil || e.T == nil || usedWrite[n] {
			continue
		}
		in := Input{Kind: OpWrite, Worker: e.W, Token: ms(*e.Tok)}
		switch {
		case e.Ok != nil && *e.Ok && e.R != nil:
			add(e, in, Output{Outcome: Done}, e.line)
		case e.Code != nil && *e.Code == "CLAIM_LOST" && e.R != nil:
			add(e, in, Output{Outcome: Refused}, e.line)
		default:
			h.Skipped["write failed for another reason"]++
		}
	}
	// A release request without an answer: the worker died or the release failed; it may have happened.
	for _, reqs := range releaseReqs {
		for _, e := range reqs {
			add(e, Input{Kind: OpRelease, Worker: e.W}, Output{Outcome: Unknown}, e.line)
		}
	}
	// A cancel revokes the claims of every task of its instance.
	for _, c := range cancels {
		outcome := Unknown
		if c.R != nil && c.Ok != nil {
			outcome = Refused
			if *c.Ok {
				outcome = Done
			}
		}
		tasks := make([]string, 0, len(tasksOf[c.I]))
		for t := range tasksOf[c.I] {
			tasks = append(tasks, t)
		}
		sort.Strings(tasks)
		for _, t := range tasks {
			ev := c
			task := t
			ev.T = &task
			add(ev, Input{Kind: OpRevoke, Worker: "cancel"}, Output{Outcome: outcome}, c.line)
		}
	}
	// Deterministic order (maps above): by call time, then by recorded line.
	sort.SliceStable(h.Ops, func(a, b int) bool {
		x, y := h.Ops[a], h.Ops[b]
		if x.Call != y.Call {
			return x.Call < y.Call
		}
		return x.Metadata.(Meta).Source < y.Metadata.(Meta).Source
	})
	return h
}
