"""kern's HTTP API from Python's standard library: submit, follow, resume, cancel.
Set KERN_URL (e.g. http://127.0.0.1:8080) and KERN_KEY (from `kern keys create`)."""
import json, os, sys, urllib.request

def request(method, path, body=None, headers={}):
    headers = {"Authorization": "Bearer " + os.environ["KERN_KEY"], "Content-Type": "application/json", **headers}
    data = None if body is None else json.dumps(body).encode()
    url = os.environ["KERN_URL"].rstrip("/") + path
    return urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=60)

def api(method, path, body=None):
    with request(method, path, body) as resp:
        return json.load(resp)

def events(run_id, after=0):  # the run's server-sent events after seq `after`, as (seq, type, data)
    with request("GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(after)}) as stream:
        event = {}
        for line in map(bytes.decode, stream):
            if line.strip() == "" and "data" in event:  # a blank line ends an event
                yield int(event["id"]), event["event"], json.loads(event.pop("data"))
            elif not line.startswith(":"):  # ": ping" is a heartbeat
                field, _, value = line.rstrip("\r\n").partition(": ")
                event[field] = value

def follow(stream, seqs, stop_after=None):  # print deltas, note seqs; return the last event's type
    kind = None
    for seq, kind, data in stream:
        seqs.append(seq)
        print(data.get("delta") or f"\n[{seq}] {kind} ", end="", flush=True)
        if len(seqs) == stop_after:
            stream.close()  # drop the connection on purpose, as a flaky network would
            break
    return kind

seqs, story = [], api("POST", "/v1/runs", {"agent": "assistant", "prompt": "[fake:drip=5ms,words=60] Tell me a story"})
print("submitted", story["run_id"], end="")
follow(events(story["run_id"]), seqs, stop_after=3)
print(f"\n-- dropped the connection; resumed after seq {seqs[-1]} --")
last = follow(events(story["run_id"], after=seqs[-1]), seqs)
if seqs != list(range(1, len(seqs) + 1)) or last != "run.completed":
    sys.exit(f"\nFAIL: seqs {seqs}, last event {last}")
print(f"\nsaw seqs 1..{len(seqs)}: no gap, no repeat")

hang = api("POST", "/v1/runs", {"agent": "assistant", "prompt": "[fake:hang] wait forever"})["run_id"]
print("submitted", hang, end="")
for seq, kind, data in events(hang):
    print(f"\n[{seq}] {kind}", end="")
    if kind == "run.started":  # a worker has it and the model hangs: cancel it
        print(" -> POST cancel, cancelled:", api("POST", f"/v1/runs/{hang}/cancel")["cancelled"], end="")
status = api("GET", f"/v1/runs/{hang}/wait?timeout=10s")["status"]
print("\nfinal status:", status)
if status != "cancelled":
    sys.exit(f"FAIL: status {status}, want cancelled")
