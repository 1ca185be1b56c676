//go:build unix

package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// account is the unprivileged user that runs initdb and postgres when we are
// root, because both refuse to run as root. nil means "run as ourselves".
type account struct {
	name     string
	uid, gid uint32
}

// unprivilegedAccount picks postgres, else nobody, when running as root.
func unprivilegedAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root and no unprivileged user (postgres, nobody) to run initdb as: %v", errs)
}

// sysProcAttr runs a child as a (nil means as ourselves). newGroup puts it in
// its own process group so a Ctrl-C aimed at go test does not reach it.
func (a *account) sysProcAttr(newGroup bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: newGroup}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid, NoSetGroups: true}
	}
	return attr
}

// chown hands dir to a so initdb can write into it.
func (a *account) chown(dir string) error {
	if a == nil {
		return nil
	}
	return os.Chown(dir, int(a.uid), int(a.gid))
}

// tempRoot returns where to create the cluster directory: RAM when there is
// plenty, else TMPDIR. An unprivileged user must be able to traverse every
// parent, which a root-only TMPDIR (e.g. under /root) does not allow.
func (a *account) tempRoot() string {
	if dir := memoryTempRoot(); dir != "" {
		return dir
	}
	return a.traversableTempDir()
}

// traversableTempDir is TMPDIR, or /tmp when a cannot reach TMPDIR.
func (a *account) traversableTempDir() string {
	if dir := os.TempDir(); a.canTraverse(dir) {
		return dir
	}
	return "/tmp"
}

// canTraverse reports whether a can reach dir: every parent must let others
// search it. Running as ourselves, anything goes.
func (a *account) canTraverse(dir string) bool {
	if a == nil {
		return true
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// diskTempRoot returns where to create a cluster whose data must be on
// disk, so that its fsyncs are real: TMPDIR, else /var/tmp (on disk by
// convention, even where /tmp is a tmpfs), else /tmp — the first one a can
// reach that is not a tmpfs. When all are tmpfs it settles for
// traversableTempDir.
func (a *account) diskTempRoot() string {
	for _, dir := range []string{os.TempDir(), "/var/tmp", "/tmp"} {
		if a.canTraverse(dir) && !isTmpfs(dir) {
			return dir
		}
	}
	return a.traversableTempDir()
}

// stopGroup signals the process group that p leads (it was started with
// sysProcAttr(true)): SIGTERM, or SIGKILL when hard. A group that is already
// gone is not an error.
func stopGroup(p *os.Process, hard bool) error {
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", p.Pid, err)
	}
	return nil
}
