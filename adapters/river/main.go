// Command river-adapter runs River (github.com/riverqueue/river) under the outbox harness through the process
// contract of docs/adapters.md: `schema` and `state` answer one JSON request, `consume SPEC` runs one consumer and
// writes its history, `publish` serves the publisher's line protocol. Only River's public API is used.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/outbox-harness/adapters/river/harnessproc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: river-adapter schema|state|publish|consume SPEC")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "schema":
		os.Exit(harnessproc.Command(createSchema))
	case "state":
		os.Exit(harnessproc.Command(readState))
	case "publish":
		if err := harnessproc.ServePublisher(context.Background(), os.Stdin, os.Stdout, openPublisher); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "consume":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: river-adapter consume SPEC")
			os.Exit(2)
		}
		os.Exit(harnessproc.Consume(os.Args[2], "river", consume))
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
}
