package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// Histories in the recorder's format: "wf" / "t" is the one (instance, task); lease 1000 ms.
func check(t *testing.T, skew int64, lines ...string) Result {
	t.Helper()
	var events []Event
	if broken, err := readLines(strings.NewReader(strings.Join(lines, "\n")), &events); err != nil || broken > 0 {
		t.Fatalf("bad test history: %v, %d broken", err, broken)
	}
	return CheckAll(LeaseModel(), BuildHistory(events, skew).Ops, 10*time.Second, "")
}

func mustPass(t *testing.T, lines ...string) {
	t.Helper()
	if r := check(t, 250, lines...); len(r.Violations)+len(r.Unknown) > 0 {
		t.Fatalf("a correct history was rejected: %+v", r)
	}
}

func mustFail(t *testing.T, want string, lines ...string) Violation {
	t.Helper()
	r := check(t, 250, lines...)
	if len(r.Violations) != 1 {
		t.Fatalf("want one violation, got %+v", r)
	}
	v := r.Violations[0]
	reasons := ""
	for _, b := range v.Blocked {
		reasons += b.Reason + "\n"
	}
	if !strings.Contains(reasons, want) {
		t.Fatalf("want a reason containing %q, got:\n%s", want, reasons)
	}
	return v
}

const (
	claimA   = `{"k":"claim","w":"a","i":"wf","t":"t","tok":1,"ca":1000,"ea":2000,"q":998,"r":1002}`
	extendA  = `{"k":"extend","w":"a","i":"wf","t":"t","tok":1,"ea":2400,"d":1000,"q":1399,"r":1401}`
	claimB   = `{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":2600,"ea":3600,"q":2598,"r":2602}`
	reqA     = `{"k":"release-req","w":"a","i":"wf","t":"t","q":1500}`
	commitA  = `{"k":"write","op":"result","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":1500,"r":1510}`
	releaseA = `{"k":"release","w":"a","i":"wf","t":"t","q":1500,"r":1510}`
)

func TestCorrectHistoriesPass(t *testing.T) {
	// Claim, heartbeat, commit (write + release), then the next claim.
	mustPass(t, claimA, extendA, reqA, commitA, releaseA,
		`{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1600,"ea":2600,"q":1599,"r":1601}`)
	// A takeover after expiry (2400), and the stale holder's write and heartbeat refused.
	mustPass(t, claimA, extendA, claimB,
		`{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":false,"code":"CLAIM_LOST","q":2700,"r":2710}`,
		`{"k":"extend-fail","w":"a","i":"wf","t":"t","code":"CLAIM_LOST","q":2720,"r":2725}`)
	// A takeover 100 ms before the recorded expiry: within the 250 ms skew tolerance.
	mustPass(t, claimA, `{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1900,"ea":2900,"q":1898,"r":1902}`)
	// A worker died inside completeTasks: its commit may have landed and released the claim.
	mustPass(t, claimA, reqA, `{"k":"claim","w":"b","i":"wf","t":"t","tok":5,"ca":1600,"ea":2600,"q":1599,"r":1601}`)
	// A heartbeat whose answer was lost may have renewed the lease: a later write may land.
	mustPass(t, claimA, `{"k":"extend-fail","w":"a","i":"wf","t":"t","code":"BACKEND","q":1800,"r":1900}`,
		`{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":2500,"r":2510}`)
	// Concurrent operations may be ordered either way: a write racing with the release.
	mustPass(t, claimA,
		`{"k":"release-req","w":"a","i":"wf","t":"t","q":1500}`,
		`{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":1490,"r":1520}`,
		`{"k":"release","w":"a","i":"wf","t":"t","q":1500,"r":1505}`)
	// A cancel revokes the claim: the next claim may come at once.
	mustPass(t, claimA, `{"k":"cancel","i":"wf","ok":true,"q":1200,"r":1210}`,
		`{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1300,"ea":2300,"q":1299,"r":1301}`)
}

func TestViolationsAreReported(t *testing.T) {
	mustFail(t, "granted while a's token 1 was live until 2400",
		claimA, extendA, `{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1800,"ea":2800,"q":1798,"r":1802}`)
	mustFail(t, "while the current claim is b's token 2",
		claimA, claimB, `{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":2700,"r":2710}`)
	mustFail(t, "not above 5",
		`{"k":"claim","w":"a","i":"wf","t":"t","tok":5,"ca":1000,"ea":2000,"q":998,"r":1002}`,
		`{"k":"claim","w":"b","i":"wf","t":"t","tok":3,"ca":2600,"ea":3600,"q":2598,"r":2602}`)
	mustFail(t, "extension by a granted (token 1) while b holds token 2",
		claimA, claimB, `{"k":"extend","w":"a","i":"wf","t":"t","tok":1,"ea":3700,"d":1000,"q":2699,"r":2701}`)
	mustFail(t, "after its lease expired at 2000",
		claimA, `{"k":"write","op":"result","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":2500,"r":2510}`)
	mustFail(t, "while no claim was held",
		claimA, reqA, commitA, releaseA,
		`{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":1600,"r":1610}`)
	mustFail(t, "after the store had refused that claim",
		claimA, `{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":false,"code":"CLAIM_LOST","q":1200,"r":1210}`,
		`{"k":"write","op":"snapshot","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":1300,"r":1310}`)
	mustFail(t, "granted while a's token 1 was live",
		claimA, `{"k":"claim","w":"a","i":"wf","t":"t","tok":2,"ca":1500,"ea":2500,"q":1499,"r":1501}`)
	mustFail(t, "clock skew beyond the tolerance",
		`{"k":"claim","w":"a","i":"wf","t":"t","tok":1,"ca":5000,"ea":6000,"q":998,"r":1002}`)
}

func TestSkewToleranceIsAParameter(t *testing.T) {
	overlap := []string{claimA, `{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1900,"ea":2900,"q":1898,"r":1902}`}
	if r := check(t, 250, overlap...); len(r.Violations) != 0 {
		t.Fatalf("100 ms early is within 250 ms: %+v", r)
	}
	if r := check(t, 50, overlap...); len(r.Violations) != 1 {
		t.Fatalf("100 ms early is beyond 50 ms: %+v", r)
	}
}

func TestPartitionsAreIndependent(t *testing.T) {
	// The same tokens and times on another task are another lease.
	other := strings.ReplaceAll(claimB, `"t":"t"`, `"t":"u"`)
	early := strings.ReplaceAll(other, `"ca":2600,"ea":3600,"q":2598,"r":2602`, `"ca":1100,"ea":2100,"q":1099,"r":1101`)
	r := check(t, 250, claimA, early)
	if r.Partitions != 2 || len(r.Violations) != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestTimeoutIsUnknownNotOk(t *testing.T) {
	slow := LeaseModel()
	step := slow.Step
	slow.Step = func(s, in, out interface{}) (bool, interface{}) {
		time.Sleep(200 * time.Millisecond)
		return step(s, in, out)
	}
	var events []Event
	readLines(strings.NewReader(strings.Join([]string{claimA, extendA}, "\n")), &events)
	r := CheckAll(slow, BuildHistory(events, 250).Ops, 5*time.Millisecond, "")
	if len(r.Unknown) != 1 || len(r.Violations) != 0 {
		t.Fatalf("want unknown, got %+v", r)
	}
}

func TestCommandExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines ...string) string {
		path := dir + "/" + name
		if err := writeFile(path, strings.Join(lines, "\n")+"\n"); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var out, errOut bytes.Buffer
	if code := run([]string{write("ok.jsonl", claimA, claimB)}, &out, &errOut); code != 0 {
		t.Fatalf("ok history: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	bad := write("bad.jsonl", claimA, `{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1500,"ea":2500,"q":1499,"r":1501}`)
	out.Reset()
	if code := run([]string{"-html", dir + "/html", bad}, &out, &errOut); code != 1 {
		t.Fatalf("bad history: exit %d", code)
	}
	if !strings.Contains(out.String(), "VIOLATION wf / t") || !strings.Contains(out.String(), "visualization: ") {
		t.Fatalf("report:\n%s", out.String())
	}
	if code := run([]string{dir + "/missing"}, &out, &errOut); code != 2 {
		t.Fatalf("missing input: exit %d", code)
	}
}

func writeFile(path, text string) error { return os.WriteFile(path, []byte(text), 0o644) }

func TestFailTasksReleaseItsClaim(t *testing.T) {
	claimB := `{"k":"claim","w":"b","i":"wf","t":"t","tok":2,"ca":1600,"ea":2600,"q":1599,"r":1601}`
	fail := `{"k":"write","op":"fail","w":"a","i":"wf","t":"t","tok":1,"ok":true,"code":null,"q":1500,"r":1510}`
	// As the soak writes a failTasks that landed (soakHistory): a commit that released the claim.
	mustPass(t, claimA, reqA, fail, releaseA, claimB)
	// Without its release, the retry's claim came while a's lease was live.
	mustFail(t, "granted while a's token 1 was live", claimA, fail, claimB)
}

func TestDirectoriesReadWorkerLogsOnly(t *testing.T) {
	dir := t.TempDir()
	writeFile(dir+"/w0.log", claimA+"\n")
	writeFile(dir+"/w0.log.loop", `{"type":"committed","now":1}`+"\n")
	events, broken, err := ReadEvents([]string{dir})
	if err != nil || broken != 0 || len(events) != 1 {
		t.Fatalf("%d events, %d broken, %v", len(events), broken, err)
	}
}
