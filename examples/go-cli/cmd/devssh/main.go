// devssh prints the ssh command line that reaches a development host: a
// small stdlib-only stand-in for the program the seed post packages.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

var version = "0.3.0"

func main() {
	user := flag.String("user", "dev", "user on the remote host")
	port := flag.Int("port", 22, "ssh port")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("devssh", version)
		return
	}
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: devssh [-user U] [-port P] HOST")
		os.Exit(2)
	}
	args := []string{"ssh", "-p", fmt.Sprint(*port), *user + "@" + flag.Arg(0)}
	fmt.Println(strings.Join(args, " "))
}
