-- A run's transcript: the intermediate steps of a tool-using run, one row per
-- step, committed as each happens, so a retry, a rescue or a hand-back
-- resumes where the run was instead of asking the model (and calling the
-- tools) again. Only the steps between the prompt and the final answer are
-- rows: the prompt is kern_run.input (seq 1) and the final answer is
-- kern_run.content, so a plain run (one model turn, no tools) writes nothing
-- here and costs no extra statement.
--
--   role 'assistant': a finished model turn that asked for tool calls: its
--                     content, its calls as [{"id","name","arguments"}], its
--                     token usage.
--   role 'tool':      one tool result; tool_call_id names the call it answers.
--
-- An assistant turn at seq s with n calls reserves seqs s+1 … s+n for their
-- results, in the order the model asked, whenever each result commits.
CREATE TABLE kern_run_step (
    run_id        text        NOT NULL,
    seq           integer     NOT NULL CHECK (seq > 1),
    role          text        NOT NULL CHECK (role IN ('assistant', 'tool')),
    content       text        NOT NULL DEFAULT '',
    tool_calls    jsonb,
    tool_call_id  text        NOT NULL DEFAULT '',
    tool_name     text        NOT NULL DEFAULT '',
    input_tokens  integer     NOT NULL DEFAULT 0,
    output_tokens integer     NOT NULL DEFAULT 0,
    total_tokens  integer     NOT NULL DEFAULT 0,
    at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- transcript_seq is the last transcript seq stored or reserved: 1 (the
-- prompt) until a step is written. The claim returns it, so a worker learns
-- whether there are steps to resume from without another round trip.
-- model_turns and tool_calls are the run's Metrics.ModelTurns and ToolCalls.
ALTER TABLE kern_run
    ADD COLUMN transcript_seq integer NOT NULL DEFAULT 1,
    ADD COLUMN model_turns    integer NOT NULL DEFAULT 0,
    ADD COLUMN tool_calls     integer NOT NULL DEFAULT 0;

---- create above / drop below ----

ALTER TABLE kern_run
    DROP COLUMN tool_calls,
    DROP COLUMN model_turns,
    DROP COLUMN transcript_seq;
DROP TABLE kern_run_step;
