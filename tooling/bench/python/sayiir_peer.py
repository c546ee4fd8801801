"""Scenario 6's peer: the mature Sayiir engine (PyPI `sayiir`, Rust core) on PostgreSQL.

Run by tooling/bench/src/python-peer.ts from the virtualenv the benchmark creates. Usage:

    python sayiir_peer.py run --url URL --workflows N --processes P [--poll S]
        Submits N 4-step pipelines (WorkflowClient, the engine's own PostgresBackend), starts P
        worker processes (one sayiir Worker each), starts the clock once every process is connected,
        polls the instances' status in order until every workflow is Completed, stops the workers and
        prints one JSON line: seconds, outcomes, executions per (instance, task).
    python sayiir_peer.py worker --url URL --id ID [--poll S]
        One worker process (internal): prints "ready", starts on "go" (stdin), stops on "stop" and
        prints the executions it ran as JSON.

Every task function counts its own runs per (instance, task) through get_task_context(): a task
run twice is a duplicate execution, whatever the engine's bookkeeping says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

import sayiir
from sayiir import Flow, PostgresBackend, Worker, WorkflowClient, get_task_context, task

STEPS = 4
EXECUTIONS: Counter[str] = Counter()


def _count() -> None:
    ctx = get_task_context()
    key = f"{ctx.instance_id}/{ctx.task_id}" if ctx is not None else "?/?"
    EXECUTIONS[key] += 1


@task("s1")
def s1(x: str) -> str:
    _count()
    return f"{x}.1"


@task("s2")
def s2(x: str) -> str:
    _count()
    return f"{x}.2"


@task("s3")
def s3(x: str) -> str:
    _count()
    return f"{x}.3"


@task("s4")
def s4(x: str) -> str:
    _count()
    return f"{x}.4"


def pipeline():
    return Flow("bench-steps").then(s1).then(s2).then(s3).then(s4).build()


def expected(input_: str) -> str:
    return input_ + "".join(f".{k}" for k in range(1, STEPS + 1))


def backend(url: str, connections: int) -> PostgresBackend:
    return PostgresBackend(url, max_connections=connections, min_connections=1)


def worker_main(args: argparse.Namespace) -> None:
    wf = pipeline()
    w = Worker(args.id, backend(args.url, 4), poll_interval=args.poll, claim_ttl=300.0)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    handle = w.start([wf])
    sys.stdin.readline()  # "stop" (or EOF)
    handle.shutdown()
    handle.join()
    print(json.dumps({"executions": dict(EXECUTIONS)}), flush=True)


def run_main(args: argparse.Namespace) -> None:
    wf = pipeline()
    client = WorkflowClient(backend(args.url, 8))
    ids = [f"{args.prefix}{i}" for i in range(args.workflows)]
    t0 = time.perf_counter()
    for i in ids:
        client.submit(wf, i, i)
    submit_s = time.perf_counter() - t0
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "worker", "--url", args.url,
             "--id", f"py-{p}", "--poll", str(args.poll)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for p in range(args.processes)
    ]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker process did not start")
        start = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        # Workflows finish roughly in submission order: check the first unfinished one until none is left.
        deadline = start + args.timeout
        done = 0
        while done < len(ids):
            status = client.status(ids[done])
            if status.is_completed() or status.is_failed() or status.is_cancelled():
                done += 1
                continue
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(ids) - done} workflows unfinished after {args.timeout} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        executions: Counter[str] = Counter()
        for p in procs:
            p.stdin.write("stop\n")
            p.stdin.flush()
        for p in procs:
            line = p.stdout.readline()
            p.wait(timeout=60)
            executions.update(json.loads(line)["executions"])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    completed = wrong = failed = 0
    for i in ids:
        status = client.status(i)
        if status.is_completed():
            completed += 1
            if status.output != expected(i):
                wrong += 1
        else:
            failed += 1
    tasks = [f"{i}/s{k}" for i in ids for k in range(1, STEPS + 1)]
    print(json.dumps({
        "version": sayiir.__version__,
        "workflows": len(ids),
        "tasks": len(tasks),
        "processes": args.processes,
        "seconds": seconds,
        "submitSeconds": submit_s,
        "completed": completed,
        "wrongOutput": wrong,
        "notCompleted": failed,
        "duplicates": sum(1 for t in tasks if executions[t] > 1),
        "extraRuns": sum(max(0, executions[t] - 1) for t in tasks),
        "neverRun": sum(1 for t in tasks if executions[t] == 0),
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "worker"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--id", default="py-0")
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--prefix", default="wf-")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.mode == "worker":
        worker_main(args)
    else:
        run_main(args)


if __name__ == "__main__":
    main()
