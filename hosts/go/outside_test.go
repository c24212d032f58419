package bextlock_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The program a user writes in their own module, outside this repository.
const outsideProgram = `package main

import (
	"fmt"
	"log"
	"os"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

func main() {
	plugin, err := bextlock.Open(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	locker, err := plugin.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()
	h, ok, err := locker.TryLock("outside/job", 30*time.Second)
	if err != nil || !ok {
		log.Fatalf("first TryLock: ok=%v err=%v", ok, err)
	}
	_, ok, err = locker.TryLock("outside/job", 30*time.Second)
	if err != nil || ok {
		log.Fatalf("second TryLock: ok=%v err=%v", ok, err)
	}
	if err := locker.Release(h); err != nil {
		log.Fatal(err)
	}
	fmt.Println("locked, contended, released")
}
`

// TestModuleBuildsOutsideRepository follows docs/GO.md as a user would: a
// new module in a folder outside the checkout, a require and a replace line
// pointing at hosts/go, and `go build` with no module proxy. The program it
// builds then locks through the memory plugin.
func TestModuleBuildsOutsideRepository(t *testing.T) {
	if _, err := os.Stat(memoryPath); err != nil {
		t.Fatalf("%s is missing: run `cargo build -p bext-locking-memory` (make go-test does)", memoryPath)
	}
	moduleDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if strings.HasPrefix(dir, filepath.Dir(filepath.Dir(moduleDir))+string(filepath.Separator)) {
		t.Fatalf("temporary folder %s is inside the repository", dir)
	}
	goMod := "module example.com/nightly\n\ngo 1.19\n\n" +
		"require github.com/bext-locking/bext-locking/hosts/go v0.0.0\n\n" +
		"replace github.com/bext-locking/bext-locking/hosts/go => " + moduleDir + "\n"
	for name, text := range map[string]string{"go.mod": goMod, "main.go": outsideProgram} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(goTool, "build", "-o", "nightly", ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off", "GO111MODULE=on")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build outside the repository failed: %v\n%s\ngo.mod:\n%s", err, out, goMod)
	}
	run := exec.Command(filepath.Join(dir, "nightly"), memoryPath)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("the program built outside the repository failed: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "locked, contended, released" {
		t.Fatalf("unexpected output %q", got)
	}
}
