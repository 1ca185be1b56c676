package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/kern-go/kern/agent"
)

// maxFileBytes bounds what one call returns to the model.
const maxFileBytes = 16 << 10

// fileReader reads files under one directory only: os.Root refuses any
// path that leaves it ("../x", absolute paths, symlinks pointing out).
type fileReader struct{ root *os.Root }

func newFileReader(dir string) (*fileReader, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &fileReader{root: root}, nil
}

func (f *fileReader) Close() error { return f.root.Close() }

func (f *fileReader) tool() agent.Tool {
	return agent.Tool{
		Name:        "read_file",
		Description: "Read a text file from the order archive, by its path inside the archive.",
		Parameters: map[string]any{
			"type":       "object",
			"properties": map[string]any{"path": map[string]any{"type": "string"}},
			"required":   []string{"path"},
		},
		Call: func(ctx context.Context, args json.RawMessage) (string, error) {
			var in struct{ Path string }
			if err := json.Unmarshal(args, &in); err != nil {
				return "", err
			}
			file, err := f.root.Open(in.Path)
			if err != nil {
				return "", err
			}
			defer file.Close()
			b, err := io.ReadAll(io.LimitReader(file, maxFileBytes+1))
			if err != nil {
				return "", err
			}
			if len(b) > maxFileBytes {
				return "", fmt.Errorf("%s is larger than %d bytes", in.Path, maxFileBytes)
			}
			return string(b), nil
		},
	}
}
