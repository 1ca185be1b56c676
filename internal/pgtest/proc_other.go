//go:build !unix

package pgtest

import (
	"errors"
	"os"
	"syscall"
)

// account is a placeholder: outside unix we never switch users.
type account struct{ name string }

func unprivilegedAccount() (*account, error) { return nil, nil }

func (a *account) sysProcAttr(bool) *syscall.SysProcAttr { return nil }

func (a *account) chown(string) error { return nil }

func (a *account) tempRoot() string { return os.TempDir() }

func (a *account) diskTempRoot() string { return os.TempDir() }

// stopGroup kills p: there are no process groups to signal here.
func stopGroup(p *os.Process, _ bool) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}
