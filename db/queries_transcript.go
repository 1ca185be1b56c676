package db

// The statements of a run's transcript (kern_run_step; see
// migrations/007_transcript.sql and the package doc's "Tool runs and their
// transcript"). Like the content appends, the two writes are batched and
// every element is fenced on its own: status 'running', its execution, and
// the event seq it takes (applied only right after seq-1), so a write sent
// again after an unknown outcome can never apply twice.

// sqlStoreTurns commits finished model turns that asked for tool calls:
// the step row, the turn's unflushed tail as a content.delta (at req_event_seq)
// and one tool.call event per call, all in one statement. A final answer
// rejected by the agent's OutputSchema is stored the same way, with no
// calls and one output.rejected event instead. The run's content
// is emptied: the turn's text is in its step now, and the content column
// holds only the turn being streamed, so it ends as the final answer. Seqs
// req_seq+1 … req_seq+n are reserved for the calls' results (transcript_seq),
// and the turn's tokens are added to the run's, so a running run reads with
// the totals so far; so is the execution's time to first token, unless an
// earlier one recorded the run's.
const sqlStoreTurns = `
WITH req AS (
	SELECT r.*, jsonb_array_length(r.req_calls) AS req_n
	FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[]::jsonb[],
		$8::int[], $9::int[], $10::int[], $11::text[], $12::bigint[])
	AS r(req_id, req_execution, req_event_seq, req_seq, req_content, req_tail, req_calls,
		req_input_tokens, req_output_tokens, req_total_tokens, req_rejected, req_ttft_us)
), stored AS (
	UPDATE kern_run SET
		content        = '',
		heartbeat_at   = now(),
		transcript_seq = req.req_seq + req.req_n,
		model_turns    = model_turns + 1,
		tool_calls     = tool_calls + req.req_n,
		input_tokens   = input_tokens + req.req_input_tokens,
		output_tokens  = output_tokens + req.req_output_tokens,
		total_tokens   = total_tokens + req.req_total_tokens,
		ttft_us        = CASE WHEN ttft_us > 0 THEN ttft_us ELSE req.req_ttft_us END,
		event_seq      = req.req_event_seq - 1 + CASE WHEN req.req_tail = '' THEN 0 ELSE 1 END + greatest(req.req_n, 1)
	FROM req
	WHERE id = req.req_id AND execution = req.req_execution AND status = 'running'
	  AND event_seq = req.req_event_seq - 1 AND transcript_seq = req.req_seq - 1
	RETURNING id, req.req_event_seq, req.req_seq, req.req_content, req.req_tail, req.req_calls,
		req.req_input_tokens, req.req_output_tokens, req.req_total_tokens, req.req_rejected
), step AS (
	INSERT INTO kern_run_step (run_id, seq, role, content, tool_calls, input_tokens, output_tokens, total_tokens)
	SELECT id, req_seq, 'assistant', req_content, req_calls, req_input_tokens, req_output_tokens, req_total_tokens
	FROM stored
), event AS (
	INSERT INTO kern_run_event (run_id, seq, type, data)
	SELECT id, req_event_seq, 'content.delta', jsonb_build_object('delta', req_tail) FROM stored WHERE req_tail <> ''
	UNION ALL
	SELECT id, req_event_seq + CASE WHEN req_tail = '' THEN 0 ELSE 1 END + c.i - 1, 'tool.call', c.call
	FROM stored CROSS JOIN LATERAL jsonb_array_elements(req_calls) WITH ORDINALITY AS c(call, i)
	UNION ALL
	SELECT id, req_event_seq + CASE WHEN req_tail = '' THEN 0 ELSE 1 END, 'output.rejected',
		jsonb_build_object('error', req_rejected)
	FROM stored WHERE jsonb_array_length(req_calls) = 0
)
SELECT id FROM stored`

// sqlStoreToolResults commits tool results, each at the transcript seq its
// turn reserved for it (so they read in the order the model asked, whatever
// order they finished in), with its tool.result event.
const sqlStoreToolResults = `
WITH req AS (
	SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[])
	AS r(req_id, req_execution, req_event_seq, req_seq, req_call_id, req_name, req_output)
), stored AS (
	UPDATE kern_run SET heartbeat_at = now(), event_seq = req.req_event_seq
	FROM req
	WHERE id = req.req_id AND execution = req.req_execution AND status = 'running'
	  AND event_seq = req.req_event_seq - 1 AND transcript_seq >= req.req_seq
	RETURNING id, req.req_event_seq, req.req_seq, req.req_call_id, req.req_name, req.req_output
), step AS (
	INSERT INTO kern_run_step (run_id, seq, role, content, tool_call_id, tool_name)
	SELECT id, req_seq, 'tool', req_output, req_call_id, req_name FROM stored
), event AS (
	INSERT INTO kern_run_event (run_id, seq, type, data)
	SELECT id, req_event_seq, 'tool.result', jsonb_build_object('id', req_call_id, 'name', req_name, 'output', req_output)
	FROM stored
)
SELECT id FROM stored`

// sqlSteps reads a run's stored steps for the execution that resumes it,
// and first the calls approved while it waited (seq 0, role 'approved'):
// the execution makes those.
const sqlSteps = `
SELECT 0 AS seq, 'approved', '', '', call_id, '', 0, 0, 0, answered_at
FROM kern_run_answer WHERE run_id = $1 AND kind = 'approved'
UNION ALL
SELECT seq, role, content, COALESCE(tool_calls::text, ''), tool_call_id, tool_name,
	input_tokens, output_tokens, total_tokens, at
FROM kern_run_step WHERE run_id = $1
ORDER BY seq`

// sqlMessages reads what a transcript is made of in one statement, so the
// run and its steps come from one snapshot: the prompt and the final
// answer from the run row, the steps in between as a JSON array in seq
// order.
const sqlMessages = `
SELECT r.input, r.content, r.status, r.created_at, r.finished_at,
	COALESCE((SELECT json_agg(json_build_object('seq', s.seq, 'role', s.role, 'content', s.content,
		'tool_calls', s.tool_calls, 'tool_call_id', s.tool_call_id, 'at', s.at) ORDER BY s.seq)
		FROM kern_run_step s WHERE s.run_id = r.id), '[]')
FROM kern_run r WHERE r.id = $1`
