package agent

import (
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/run"
)

// cancelledAnswerNote ends the answer of a cancelled run when a later run of
// the session replays it: without it the model would take a half sentence
// for everything it said, and might go on from it, or defend it, as if it
// were its whole answer.
const cancelledAnswerNote = "\n[answer cut short: run cancelled]"

// historyMessages turns the earlier runs of a session (db's History, oldest
// first) into the messages that go between the agent's instructions and the
// new prompt: for each run, its prompt as a user message and its final
// content as an assistant message, in the order the runs were made. A
// cancelled run's answer ends with cancelledAnswerNote.
//
// What History leaves out stays out here too, should an entry slip
// through: runs with no content and runs that ended in error (see db's
// sqlHistory for why). Tool calls and tool results of earlier runs are not
// replayed: their answers already say what the tools gave, and a call id
// from another run would be a dangling reference in this one's transcript.
func historyMessages(entries []db.HistoryEntry) []Message {
	if len(entries) == 0 {
		return nil
	}
	msgs := make([]Message, 0, 2*len(entries))
	for _, e := range entries {
		answer := e.Content
		switch {
		case answer == "":
			continue
		case e.Status == run.StatusCancelled:
			answer += cancelledAnswerNote
		case e.Status != run.StatusCompleted:
			continue
		}
		msgs = append(msgs,
			Message{Role: "user", Content: e.Input},
			Message{Role: "assistant", Content: answer})
	}
	return msgs
}

// startMessages is the conversation a run's first model turn sends: the
// agent's instructions as the system message (none when empty), the
// session's history (historyMessages), then the run's prompt.
func startMessages(instructions string, history []Message, prompt string) []Message {
	msgs := make([]Message, 0, len(history)+2)
	if instructions != "" {
		msgs = append(msgs, Message{Role: "system", Content: instructions})
	}
	msgs = append(msgs, history...)
	return append(msgs, Message{Role: "user", Content: prompt})
}
