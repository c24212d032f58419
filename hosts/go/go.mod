module github.com/bext-locking/bext-locking/hosts/go

go 1.19
