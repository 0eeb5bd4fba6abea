// Command agentkeys is the agent's command line for the AgentKeys broker. It
// keeps a wallet key, signs in to the broker with it (EIP-4361), and trades the
// session for short-lived OIDC JWTs, which AWS STS accepts as web identity
// tokens.
//
//	$ agentkeys wallet new
//	0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1
//	$ agentkeys login
//	signed in as 0x1a642f0e3c3af545e7acbd38b07251b3990914f1 until 2026-01-03T03:04:05Z
//	$ agentkeys jwt --out /run/agentkeys/token
//	$ AWS_WEB_IDENTITY_TOKEN_FILE=/run/agentkeys/token AWS_ROLE_ARN=arn:aws:iam::…:role/agent aws sts get-caller-identity
//
// Run agentkeys -h for the flags and commands; README.md repeats them. The file
// formats are those of package github.com/agentkeys/broker/host/client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/agentkeys/broker/shared/cliflag"
)

const usage = `Usage:
    agentkeys [flags] wallet new
    agentkeys [flags] wallet address
    agentkeys [flags] login
    agentkeys [flags] jwt [--audience A] [--ttl SECONDS] [--out FILE] [--proof FILE]
    agentkeys [flags] logout
    agentkeys [flags] creds [--format credential_process|env|json] [--duration SECONDS] [--region R] [--proof FILE]
    agentkeys [flags] exec [--duration SECONDS] [--region R] -- COMMAND [ARGS...]

Flags (before or after the command):
    --broker URL     The broker's base URL, which is its OIDC issuer.
                     Default: $AGENTKEYS_BROKER, or http://127.0.0.1:8091.
    --wallet FILE    The wallet key file.
                     Default: $AGENTKEYS_WALLET, or ~/.agentkeys/wallet.json.
    --session FILE   The session file.
                     Default: $AGENTKEYS_SESSION, or ~/.agentkeys/session.json.
    --json           Print one JSON object on standard output.

Commands:
    wallet new       Create a wallet key file (mode 0600, its directory 0700)
                     and print its address. An existing file is never replaced.
    wallet address   Print the wallet's address.
    login            Sign in to the broker with the wallet and keep the session
                     in the session file (mode 0600). A session already in the
                     file is revoked at the broker (or a note says why not).
    jwt              Print a fresh OIDC JWT for the session's wallet.
        --audience A     The JWT's audience (default: the broker's first,
                         sts.amazonaws.com).
        --ttl SECONDS    The JWT's lifetime (default: the broker's, 300).
        --out FILE       Write the JWT to FILE (mode 0600, atomically) instead,
                         such as the file AWS_WEB_IDENTITY_TOKEN_FILE names.
        --proof FILE     Also write the broker's proof that the JWT is in its
                         audit log (a C2SP tlog-proof) to FILE.
    logout           Revoke the session at the broker and delete the session
                     file. It says whether this call revoked the session or it
                     was already revoked (--json: "revoked": true or false).
    creds            Print temporary AWS credentials for the session's wallet.
        --format F       credential_process (default): the JSON the AWS CLI and
                         SDKs read from a credential_process command; env:
                         export AWS_… lines for a shell; json: the broker's fields.
        --duration S     Lifetime in seconds, 900 to 43200 (default: the
                         broker's, 3600).
        --region R       Also export AWS_REGION (env format).
        --proof FILE     Also write the broker's proof that the credentials
                         are in its audit log (a C2SP tlog-proof) to FILE.
    exec             Run COMMAND with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                     AWS_SESSION_TOKEN (and AWS_REGION, default $AWS_REGION) set
                     to fresh credentials; exit with its status.

Exit status: 0 on success, 1 on failure, 2 on a usage error.
`

const defaultBroker = "http://127.0.0.1:8091"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// cli holds the global flags and where output goes.
type cli struct {
	stdout, stderr io.Writer

	broker  string
	wallet  string // "" means ~/.agentkeys/wallet.json
	session string // "" means ~/.agentkeys/session.json
	json    bool

	// given holds the global flags set on the command line, so that hints
	// repeat them ("run: agentkeys --wallet ./w.json wallet new").
	given map[string]bool
}

// run runs agentkeys with args (without the program name) and returns the exit
// status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := &cli{
		stdout:  stdout,
		stderr:  stderr,
		broker:  envOr("AGENTKEYS_BROKER", defaultBroker),
		wallet:  os.Getenv("AGENTKEYS_WALLET"),
		session: os.Getenv("AGENTKEYS_SESSION"),
	}
	fs := c.flagSet("agentkeys")
	if err := c.parseFlags(fs, args); err != nil {
		return c.parseError(err)
	}
	args = fs.Args()
	if len(args) == 0 {
		return c.usageError("missing command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "wallet":
		// Flags may come before the subcommand too (wallet -h, wallet --wallet F new).
		fs := c.flagSet("agentkeys wallet")
		if err := c.parseFlags(fs, args); err != nil {
			return c.parseError(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return c.usageError("missing wallet command: new or address")
		}
		switch sub, args := args[0], args[1:]; sub {
		case "new":
			if code, ok := c.parse("agentkeys wallet new", args); !ok {
				return code
			}
			return c.walletNew()
		case "address":
			if code, ok := c.parse("agentkeys wallet address", args); !ok {
				return code
			}
			return c.walletAddress()
		default:
			return c.usageError(fmt.Sprintf("unknown wallet command %q: want new or address", sub))
		}
	case "login":
		if code, ok := c.parse("agentkeys login", args); !ok {
			return code
		}
		return c.login(ctx)
	case "jwt":
		var o jwtOptions
		fs := c.flagSet("agentkeys jwt")
		fs.StringVar(&o.audience, "audience", "", "")
		fs.Int64Var(&o.ttl, "ttl", 0, "")
		fs.StringVar(&o.out, "out", "", "")
		fs.StringVar(&o.proof, "proof", "", "")
		if code, ok := c.parseWith(fs, args); !ok {
			return code
		}
		return c.jwt(ctx, o)
	case "logout":
		if code, ok := c.parse("agentkeys logout", args); !ok {
			return code
		}
		return c.logout(ctx)
	case "creds":
		o := credsOptions{region: os.Getenv("AWS_REGION")}
		fs := c.flagSet("agentkeys creds")
		fs.StringVar(&o.format, "format", "credential_process", "")
		fs.Int64Var(&o.duration, "duration", 0, "")
		fs.StringVar(&o.region, "region", o.region, "")
		fs.StringVar(&o.proof, "proof", "", "")
		if code, ok := c.parseWith(fs, args); !ok {
			return code
		}
		return c.creds(ctx, o)
	case "exec":
		o := credsOptions{region: os.Getenv("AWS_REGION")}
		fs := c.flagSet("agentkeys exec")
		fs.Int64Var(&o.duration, "duration", 0, "")
		fs.StringVar(&o.region, "region", o.region, "")
		if err := c.parseFlags(fs, args); err != nil {
			return c.parseError(err)
		}
		if fs.NArg() == 0 {
			return c.usageError("exec: missing command; usage: agentkeys exec -- COMMAND [ARGS...]")
		}
		return c.execCmd(ctx, o, fs.Args())
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		return c.usageError(fmt.Sprintf("unknown command %q", cmd))
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// flagSet returns a flag set with the global flags, their defaults the values
// set so far, so that they may also follow the command.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.broker, "broker", c.broker, "")
	fs.StringVar(&c.wallet, "wallet", c.wallet, "")
	fs.StringVar(&c.session, "session", c.session, "")
	fs.BoolVar(&c.json, "json", c.json, "")
	return fs
}

// parseFlags parses args into fs (a flagSet) and records which global flags
// the command line set.
func (c *cli) parseFlags(fs *flag.FlagSet, args []string) error {
	if err := cliflag.Parse(fs, args); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) {
		if c.given == nil {
			c.given = map[string]bool{}
		}
		c.given[f.Name] = true
	})
	return nil
}

// command is the command line to suggest in a hint for running the agentkeys
// subcommand sub: with the --broker, --wallet and --session the user gave, so
// that it acts on the same files and broker.
func (c *cli) command(sub string) string {
	parts := []string{"agentkeys"}
	for _, f := range []struct{ name, value string }{{"broker", c.broker}, {"wallet", c.wallet}, {"session", c.session}} {
		if c.given[f.name] {
			parts = append(parts, "--"+f.name, shellQuote(f.value))
		}
	}
	return strings.Join(append(parts, sub), " ")
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parse parses the flags after a command that takes no arguments of its own.
func (c *cli) parse(name string, args []string) (int, bool) {
	return c.parseWith(c.flagSet(name), args)
}

func (c *cli) parseWith(fs *flag.FlagSet, args []string) (int, bool) {
	if err := c.parseFlags(fs, args); err != nil {
		return c.parseError(err), false
	}
	if fs.NArg() > 0 {
		return c.usageError(fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))), false
	}
	return 0, true
}

func (c *cli) parseError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, usage)
		return 0
	}
	return c.usageError(err.Error())
}

func (c *cli) usageError(msg string) int {
	fmt.Fprintf(c.stderr, "agentkeys: %s\n", msg)
	fmt.Fprintf(c.stderr, "hint: run: agentkeys -h\n")
	return 2
}

// fail reports err, and a hint if the user can act on it, and returns 1.
func (c *cli) fail(err error, hint string) int {
	fmt.Fprintf(c.stderr, "agentkeys: %v\n", err)
	if hint != "" {
		fmt.Fprintf(c.stderr, "hint: %s\n", hint)
	}
	return 1
}

// walletPath and sessionPath resolve the file flags.
func (c *cli) walletPath() (string, error) {
	return c.defaultPath(c.wallet, "wallet.json", "--wallet FILE or AGENTKEYS_WALLET")
}

func (c *cli) sessionPath() (string, error) {
	return c.defaultPath(c.session, "session.json", "--session FILE or AGENTKEYS_SESSION")
}

func (c *cli) defaultPath(set, name, how string) (string, error) {
	if set != "" {
		return set, nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", fmt.Errorf("cannot find the home directory for the default %s; set %s", name, how)
	}
	return filepath.Join(home, ".agentkeys", name), nil
}
