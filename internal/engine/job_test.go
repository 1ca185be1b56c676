package engine

import (
	"regexp"
	"testing"
)

// riverQueueName is River's rule for queue names (client.go, nameRegex).
var riverQueueName = regexp.MustCompile(`^(?:[a-z0-9])+(?:[_|\-]?[a-z0-9]+)*$`)

func TestQueueFor(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{
		"assistant", "writer", "Writer", "wrïter", "my agent", "__x__", "-", "", "日本語",
		"a.b.c", "UPPER_lower-09", "x" + string(make([]byte, 300)),
		"averyveryveryveryveryveryveryveryveryverylongagentnamethatgoesonandon",
	} {
		q := QueueFor(name)
		if len(q) > 64 || !riverQueueName.MatchString(q) {
			t.Errorf("QueueFor(%q) = %q: not a valid River queue name", name, q)
		}
		if other, dup := seen[q]; dup {
			t.Errorf("QueueFor(%q) = QueueFor(%q) = %q", name, other, q)
		}
		seen[q] = name
		if QueueFor(name) != q {
			t.Errorf("QueueFor(%q) is not stable", name)
		}
	}
	if got := QueueFor("My Agent"); got != "kern_my_agent_"+QueueFor("My Agent")[len(got)-8:] {
		t.Errorf("QueueFor(%q) = %q: want the readable part kern_my_agent_", "My Agent", got)
	}
}
