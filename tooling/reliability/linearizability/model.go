package main

// The sequential specification of ONE lease with fencing tokens: the claim on one (instance, task).
// Porcupine searches for an order of the recorded operations, each placed inside its real-time
// window, in which every step is legal under this model.
//
// Time: an operation's window [q, r] is the worker's local clock; expiry is judged by the store's
// clock, which may differ by up to the skew tolerance. So every input carries the store-time window
// [q - skew, r + skew], and the model says "could have expired" / "could still be live" when some
// store time in that window allows it. The model is permissive wherever the history cannot know
// (refusals, lost answers) and strict only on what a correct store can never do: grant a claim while
// another is live, let a write with a non-current token land, renew a lease someone else holds or
// one that had expired, hand out a token that is not above every earlier one.

import (
	"fmt"
	"math"

	"github.com/anishathalye/porcupine"
)

// OpKind is what an operation did to the lease.
type OpKind uint8

const (
	// OpClaim is claimTask or one task of claimAvailableTasks.
	OpClaim OpKind = iota
	// OpExtend is extendTaskClaim (a heartbeat), by worker.
	OpExtend
	// OpRelease is releaseTaskClaim, by worker.
	OpRelease
	// OpWrite is saveSnapshot / saveTaskResult fenced by a token.
	OpWrite
	// OpCommit is one completeTasks item: a fenced write and the release of its claim in one step.
	OpCommit
	// OpRevoke is cancelWorkflow: every claim of the instance is revoked.
	OpRevoke
)

func (k OpKind) String() string {
	return [...]string{"claim", "extend", "release", "write", "commit", "revoke"}[k]
}

// Outcome is what the caller learnt.
type Outcome uint8

const (
	// Done: the store acknowledged the operation.
	Done Outcome = iota
	// Refused: ClaimLostError (or, for an extend, NotFoundError): the store said this lease is not live.
	Refused
	// Unknown: no answer (the worker died or the request failed in a way that says nothing); the
	// operation may or may not have taken effect, at any time after its call.
	Unknown
)

func (o Outcome) String() string { return [...]string{"ok", "refused", "unknown"}[o] }

// Forever stands for "no expiry" (a claim without ttl) and for the open end of a window.
const Forever int64 = math.MaxInt64 / 4

// Input of one operation.
type Input struct {
	Kind   OpKind
	Worker string
	// Token: the fence of a write or commit.
	Token int64
	// Lo, Hi: the store-time window, [q - skew, r + skew]; Hi is Forever when the outcome is unknown.
	Lo, Hi int64
	// Dur: an extension's duration (the history's longest when the event does not say).
	Dur int64
}

// Output of one operation.
type Output struct {
	Outcome Outcome
	// Token, Expires: what a claim or an extension returned (Expires: Forever without ttl).
	Token   int64
	Expires int64
	// At: the store's own timestamp of a claim (claimedAt) or an extension (expiresAt - duration);
	// NoStamp when the store did not say.
	At int64
}

// NoStamp marks an Output without a store timestamp.
const NoStamp int64 = math.MinInt64

// State of the lease. Comparable with ==, as porcupine's cache needs.
type State struct {
	// Last: the highest token granted so far (0: none).
	Last int64
	// Holder: the worker holding the current claim; "" once released or committed (or never claimed).
	Holder string
	// Token: the current claim's token.
	Token int64
	// ExpLo, ExpHi: bounds of the current claim's expiry in store time (equal unless an extension's
	// answer was lost).
	ExpLo, ExpHi int64
	// Lost: the store refused this claim (expired, revoked or taken over by a claim never recorded):
	// nothing may land with it any more, and a new claim may be granted.
	Lost bool
}

func satAdd(a, b int64) int64 {
	if a >= Forever || b >= Forever || a+b >= Forever {
		return Forever
	}
	return a + b
}

// free: the state after a release or a commit.
func free(s State) State { return State{Last: s.Last} }

// Apply is the model's step: the next state, or a non-empty reason why the step is illegal.
func Apply(s State, in Input, out Output) (State, string) {
	switch in.Kind {
	case OpClaim:
		return applyClaim(s, in, out)
	case OpExtend:
		return applyExtend(s, in, out)
	case OpRelease:
		if out.Outcome == Unknown {
			if s.Holder == in.Worker {
				return free(s), ""
			}
			return s, ""
		}
		if s.Holder != in.Worker {
			return s, fmt.Sprintf("release by %s acknowledged while %s", in.Worker, describeHolder(s))
		}
		return free(s), ""
	case OpWrite, OpCommit:
		return applyWrite(s, in, out)
	case OpRevoke:
		if out.Outcome == Refused || s.Holder == "" {
			return s, ""
		}
		next := s
		next.Lost = true
		return next, ""
	}
	return s, fmt.Sprintf("unknown operation kind %d", in.Kind)
}

func applyClaim(s State, in Input, out Output) (State, string) {
	if out.Token <= s.Last {
		return s, fmt.Sprintf("claim by %s got token %d, not above %d granted before", in.Worker, out.Token, s.Last)
	}
	if s.Holder != "" && !s.Lost && s.ExpLo > in.Hi {
		return s, fmt.Sprintf(
			"claim by %s (token %d) granted while %s's token %d was live until %d, after the claim's latest store time %d (skew included)",
			in.Worker, out.Token, s.Holder, s.Token, s.ExpLo, in.Hi)
	}
	if out.At != NoStamp && (out.At < in.Lo || out.At > in.Hi) {
		return s, fmt.Sprintf("claim by %s stamped %d by the store, outside its window [%d, %d]: clock skew beyond the tolerance",
			in.Worker, out.At, in.Lo, in.Hi)
	}
	return State{Last: out.Token, Holder: in.Worker, Token: out.Token, ExpLo: out.Expires, ExpHi: out.Expires}, ""
}

func applyExtend(s State, in Input, out Output) (State, string) {
	mine := s.Holder == in.Worker
	switch out.Outcome {
	case Refused:
		if mine {
			s.Lost = true
		}
		return s, ""
	case Unknown:
		// Maybe renewed to (store time) + duration, at some time in its window.
		if mine && !s.Lost && s.ExpHi >= in.Lo && s.ExpHi < Forever {
			s.ExpLo = min(s.ExpLo, satAdd(in.Lo, in.Dur))
			s.ExpHi = max(s.ExpHi, satAdd(in.Hi, in.Dur))
		}
		return s, ""
	}
	switch {
	case !mine:
		return s, fmt.Sprintf("extension by %s granted (token %d) while %s", in.Worker, out.Token, describeHolder(s))
	case s.Lost:
		return s, fmt.Sprintf("extension by %s granted (token %d) after the store had refused that claim", in.Worker, out.Token)
	case out.Token != s.Token:
		return s, fmt.Sprintf("extension by %s returned token %d, the claim is token %d", in.Worker, out.Token, s.Token)
	case s.ExpHi < in.Lo:
		return s, fmt.Sprintf("extension by %s (token %d) granted after its lease expired at %d, before the extension's earliest store time %d (skew included)",
			in.Worker, out.Token, s.ExpHi, in.Lo)
	case out.At != NoStamp && (out.At < in.Lo || out.At > in.Hi):
		return s, fmt.Sprintf("extension by %s stamped %d by the store, outside its window [%d, %d]: clock skew beyond the tolerance",
			in.Worker, out.At, in.Lo, in.Hi)
	}
	s.ExpLo, s.ExpHi = out.Expires, out.Expires
	return s, ""
}

func applyWrite(s State, in Input, out Output) (State, string) {
	current := s.Holder != "" && s.Token == in.Token
	switch out.Outcome {
	case Refused:
		if current {
			s.Lost = true
		}
		return s, ""
	case Unknown:
		// Only commits have unknown outcomes that matter: one may have landed and released the claim.
		if in.Kind == OpCommit && current {
			return free(s), ""
		}
		return s, ""
	}
	what := fmt.Sprintf("%s by %s with token %d landed", in.Kind, in.Worker, in.Token)
	switch {
	case s.Holder == "":
		return s, fmt.Sprintf("%s while no claim was held (last token %d, released)", what, s.Last)
	case s.Token != in.Token:
		return s, fmt.Sprintf("%s while the current claim is %s's token %d", what, s.Holder, s.Token)
	case s.Lost:
		return s, fmt.Sprintf("%s after the store had refused that claim", what)
	case s.ExpHi < in.Lo:
		return s, fmt.Sprintf("%s after its lease expired at %d, before the write's earliest store time %d (skew included)", what, s.ExpHi, in.Lo)
	}
	if in.Kind == OpCommit {
		return free(s), ""
	}
	return s, ""
}

func describeHolder(s State) string {
	if s.Holder == "" {
		return "no claim was held"
	}
	return fmt.Sprintf("%s holds token %d", s.Holder, s.Token)
}

// DescribeState renders a state for reports and the visualization.
func DescribeState(s State) string {
	if s.Holder == "" {
		return fmt.Sprintf("free (last token %d)", s.Last)
	}
	exp := fmt.Sprintf("until %d", s.ExpLo)
	if s.ExpLo >= Forever {
		exp = "without expiry"
	} else if s.ExpHi != s.ExpLo {
		exp = fmt.Sprintf("until %d..%s", s.ExpLo, fmtTime(s.ExpHi))
	}
	lost := ""
	if s.Lost {
		lost = ", refused by the store"
	}
	return fmt.Sprintf("%s holds token %d %s%s", s.Holder, s.Token, exp, lost)
}

func fmtTime(t int64) string {
	if t >= Forever {
		return "never"
	}
	return fmt.Sprint(t)
}

// DescribeOperation renders one operation for reports and the visualization.
func DescribeOperation(in Input, out Output) string {
	switch in.Kind {
	case OpClaim:
		return fmt.Sprintf("%s claim -> token %d until %s", in.Worker, out.Token, fmtTime(out.Expires))
	case OpExtend:
		if out.Outcome == Done {
			return fmt.Sprintf("%s extend -> token %d until %s", in.Worker, out.Token, fmtTime(out.Expires))
		}
		return fmt.Sprintf("%s extend -> %s", in.Worker, out.Outcome)
	case OpRelease:
		return fmt.Sprintf("%s release -> %s", in.Worker, out.Outcome)
	case OpWrite, OpCommit:
		return fmt.Sprintf("%s %s token %d -> %s", in.Worker, in.Kind, in.Token, out.Outcome)
	case OpRevoke:
		return fmt.Sprintf("revoke (cancel) -> %s", out.Outcome)
	}
	return "?"
}

// LeaseModel is the porcupine model: one lease per (instance, task), the partition key.
func LeaseModel() porcupine.Model {
	return porcupine.Model{
		Partition: partitionByKey,
		Init:      func() interface{} { return State{} },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			next, why := Apply(state.(State), input.(Input), output.(Output))
			return why == "", next
		},
		DescribeOperation: func(input, output interface{}) string {
			return DescribeOperation(input.(Input), output.(Output))
		},
		DescribeState: func(state interface{}) string { return DescribeState(state.(State)) },
		DescribeOperationMetadata: func(info interface{}) string {
			if m, ok := info.(Meta); ok {
				return m.Source
			}
			return ""
		},
	}
}

// Meta travels with each operation: its partition key and the recorded event(s) it came from.
type Meta struct {
	Instance, Task string
	Source         string
}

// partitionByKey splits a history into one sub-history per (instance, task), in first-seen order.
func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	index := map[[2]string]int{}
	var parts [][]porcupine.Operation
	for _, op := range history {
		m := op.Metadata.(Meta)
		k := [2]string{m.Instance, m.Task}
		n, seen := index[k]
		if !seen {
			n = len(parts)
			index[k] = n
			parts = append(parts, nil)
		}
		parts[n] = append(parts[n], op)
	}
	return parts
}
