#!/bin/sh
# kern's HTTP API with curl: submit a run, follow its events, read it, list
# runs, and cancel an id before its run exists. POSIX sh; needs only curl.
# Set KERN_URL (e.g. http://127.0.0.1:8080) and KERN_KEY (from `kern keys create`).
set -eu
: "${KERN_URL:?set KERN_URL, e.g. http://127.0.0.1:8080}" "${KERN_KEY:?set KERN_KEY (kern keys create)}"
url=${KERN_URL%/}
auth="Authorization: Bearer $KERN_KEY"

echo "# submit a run: POST /v1/runs (202, the run as pending)"
run=$(curl -fsS -H "$auth" -H 'Content-Type: application/json' \
	-d '{"agent":"assistant","prompt":"[fake:drip=5ms,words=12] Tell me a story"}' "$url/v1/runs")
echo "$run"
id=$(echo "$run" | sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p')

echo
echo "# follow its events: GET /v1/runs/$id/events (SSE; curl -N does not buffer; the stream ends after the run's last event)"
curl -fsS -N -H "$auth" "$url/v1/runs/$id/events"

echo "# the run: GET /v1/runs/$id"
curl -fsS -H "$auth" "$url/v1/runs/$id"

echo
echo "# the tenant's last 3 runs: GET /v1/runs?limit=3"
curl -fsS -H "$auth" "$url/v1/runs?limit=3"

early="curl-demo-$(date +%s)-$$"
echo
echo "# cancel $early before it exists: POST /v1/runs/$early/cancel (cancelled, run null)"
curl -fsS -X POST -H "$auth" "$url/v1/runs/$early/cancel"
echo "# submit it now: it never reaches the model; GET /v1/runs/$early/wait?timeout=10s"
curl -fsS -o /dev/null -H "$auth" -H 'Content-Type: application/json' \
	-d "{\"agent\":\"assistant\",\"run_id\":\"$early\",\"prompt\":\"too late\"}" "$url/v1/runs"
final=$(curl -fsS -H "$auth" "$url/v1/runs/$early/wait?timeout=10s")
echo "$final"
case $final in
*'"status":"cancelled"'*) echo "# it ended cancelled" ;;
*) echo "FAIL: $early did not end cancelled" >&2; exit 1 ;;
esac
