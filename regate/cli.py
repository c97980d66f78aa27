"""The `regate` command: one entry point for the compiler, the enforcer and the dev tools."""

from __future__ import annotations

import argparse
import json
import os
import sys

from regate import __version__
from regate.audit import MIN_COVERAGE  # the package alone: `serve` must import nothing before gevent patches
from regate.common.errors import ConfigError, RegateError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # the input (config, arguments, output path) needs fixing
EXIT_CHANGED = 1  # regate diff: some decision changes
EXIT_UNDECIDED = 3  # regate diff: the decisions could not be evaluated (OPA failed), so nothing is known


def _checked(config, files, min_coverage: float) -> bool:
    """The bundle's own checks (fmt, check --strict, its tests with coverage, annotations), reported on stderr."""
    from regate.audit import bundle_checks

    report = bundle_checks.check_files(files)
    ok = report.ok(min_coverage)
    print(f"{config.source_file}: {'ok' if ok else 'FAILED'}: {report.summary(min_coverage)}", file=sys.stderr)
    return ok


def _compile(args) -> int:
    from regate import compiler

    if not args.check:
        config = compiler.compile_file(args.config, args.output, signing_key=args.signing_key,
                                       signing_alg=args.signing_alg, key_id=args.key_id)
    else:
        config = compiler.load_config(args.config)
        files = compiler.bundle_files(config, signing_key=args.signing_key, signing_alg=args.signing_alg,
                                      key_id=args.key_id)
        if not _checked(config, files, args.min_coverage):
            return EXIT_FAILED  # nothing is written
        compiler.bundle.write(files, args.output)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _test(args) -> int:
    from regate import compiler

    status = EXIT_OK
    for path in args.configs:
        try:
            config = compiler.load_config(path)
        except ConfigError as e:
            for diagnostic in e.diagnostics:
                print(diagnostic, file=sys.stderr)
            status = EXIT_USAGE
            continue
        if not _checked(config, compiler.bundle_files(config), args.min_coverage) and status == EXIT_OK:
            status = EXIT_FAILED
    return status


def _emit(text: str, output: str | None) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def _explain(args) -> int:
    from regate import compiler
    from regate.audit import explain

    config = compiler.load_config(args.config)
    token = sys.stdin.read().strip() if args.token == "-" else args.token
    credential = explain.credential(claims=args.claims, token=token, master_key=args.master_key,
                                    virtual_key=args.virtual_key, issuers=[i.issuer for i in config.policy.issuers])
    doc = explain.request_input(credential, method=args.method, path=args.path, model=args.model, team=args.team,
                                facts=args.facts)
    result = explain.explain(config, args.config, doc, blocked_teams=tuple(args.blocked_team))
    _emit(json.dumps(result.as_json(), indent=2) + "\n" if args.json else explain.explanation_text(result), None)
    return EXIT_OK


def _matrix(args) -> int:
    from regate import compiler
    from regate.audit import html, markdown, matrix

    m = matrix.build(compiler.load_config(args.config), teams=tuple(args.team))
    render = {"markdown": markdown.matrix_markdown, "html": html.matrix_html,
              "json": lambda m: json.dumps(m.as_json(), indent=2) + "\n"}[args.format]
    _emit(render(m), args.output)
    return EXIT_OK


def _diff(args) -> int:
    from regate import compiler
    from regate.audit import diff, markdown

    old, new = compiler.load_config(args.old), compiler.load_config(args.new)
    try:
        result = diff.compare(old, new, teams=tuple(args.team))
    except RegateError as e:
        if e.status < 500:
            raise
        print(f"regate diff: {e.message} [{e.code}]", file=sys.stderr)
        return EXIT_UNDECIDED
    render = {"text": markdown.diff_text, "markdown": markdown.diff_markdown,
              "json": lambda d: json.dumps(d.as_json(), indent=2) + "\n"}[args.format]
    _emit(render(result), args.output)
    return EXIT_CHANGED if result.changed else EXIT_OK


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _workers(args) -> int:
    """--workers, else REGATE_WORKERS, else 1; read only by `serve` (a bad value never breaks other commands)."""
    if args.workers is not None:
        return args.workers
    raw = os.environ.get("REGATE_WORKERS") or "1"
    try:
        return _positive_int(raw)
    except argparse.ArgumentTypeError as e:
        raise RegateError(f"REGATE_WORKERS: {e}", code="invalid_setting", status=400) from None


def _serve(args) -> int:
    args.workers = _workers(args)
    # Patch before anything imports ssl/socket/threading: gunicorn's gevent workers inherit
    # the imported modules, and patching them late breaks TLS to the upstreams.
    from gevent import monkey

    monkey.patch_all()
    from regate.enforcer.serve import serve

    return serve(args)


def _bundle_serve(args) -> int:
    from gevent import monkey

    monkey.patch_all()
    from regate.enforcer.bundle_service import serve_bundles

    return serve_bundles(args)


def _demo(args) -> int:
    from regate.devtools import demo

    return demo.main(args)


def _dev_token(args) -> int:
    from regate.devtools import dev

    return dev.token_command(args)


def _dev_idp(args) -> int:
    from regate.devtools import dev

    return dev.idp_command(args)


def _min_coverage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-coverage", type=float, default=MIN_COVERAGE, metavar="PERCENT",
                   help=f"fail when the generated tests evaluate less of the policy (default {MIN_COVERAGE:g})")


def _team_rows_and_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--team", action="append", default=[], metavar="TEAM", help="add a row for a token of TEAM (repeatable)")
    p.add_argument("-o", "--output", help="write here instead of stdout")


def _signing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signing-key", help="PEM private key: sign the bundle (.signatures.json, as OPA verifies it)")
    p.add_argument("--signing-alg", choices=["RS256", "ES256"], help="default: RS256 for RSA keys, ES256 for EC keys")
    p.add_argument("--key-id", help="the key id OPA looks the verification key up by (default: 'default')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"regate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="compile a LiteLLM config into an OPA bundle")
    p.add_argument("config", help="the LiteLLM proxy config.yaml")
    p.add_argument("-o", "--output", default="bundle.tar.gz",
                   help="OUT ending in .tar.gz writes a bundle tarball, anything else a bundle directory (default: bundle.tar.gz)")
    p.add_argument("--check", action="store_true",
                   help="before writing: opa fmt, opa check --strict, the generated tests with coverage, annotations")
    _min_coverage(p)
    _signing_options(p)
    p.set_defaults(run=_compile)

    p = sub.add_parser("test", help="compile each config and run the bundle's checks (what compile --check runs); writes nothing")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="LiteLLM proxy config.yaml files")
    _min_coverage(p)
    p.set_defaults(run=_test)

    p = sub.add_parser("explain", help="the policy's decision for one request, check by check, with the config behind it")
    p.add_argument("config", help="the LiteLLM proxy config.yaml")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--claims", metavar="JSON", help="a JWT's verified claims")
    who.add_argument("--token", metavar="JWT", help="a JWT ('-': read it from stdin); its claims are read, not verified")
    who.add_argument("--master-key", action="store_true", help="the master key")
    who.add_argument("--virtual-key", metavar="JSON", help='a stored key\'s owner: {"user_id", "team_id", "org_id", "models"}')
    who.add_argument("--no-credential", action="store_true", help="no credential at all")
    p.add_argument("--method", default="POST")
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--model", help="the body's model")
    p.add_argument("--team", help="the x-litellm-team-id header: which of the credential's teams to run as")
    p.add_argument("--facts", metavar="JSON", help='what the store knows (input.facts): {"user_id", "user_exists", "teams": {id: models}, '
                   '"team_aliases", "org_aliases", "budgets"}')
    p.add_argument("--blocked-team", action="append", default=[], metavar="TEAM", help="a blocked team (repeatable)")
    p.add_argument("--json", action="store_true", help="every check, as JSON")
    p.set_defaults(run=_explain)

    p = sub.add_parser("matrix", help="who may call what: principals x routes, decided by OPA")
    p.add_argument("config", help="the LiteLLM proxy config.yaml")
    p.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")
    _team_rows_and_output(p)
    p.set_defaults(run=_matrix)

    p = sub.add_parser("diff", help="every decision that changes between two configs (exit 0 none, 1 some, 2 config error)")
    p.add_argument("old", help="the config before (e.g. the base branch's)")
    p.add_argument("new", help="the config after")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    _team_rows_and_output(p)
    p.set_defaults(run=_diff)

    p = sub.add_parser("serve", help="run the enforcer (and a managed OPA unless --opa-url is given)")
    p.add_argument("--config", required=True, help="the LiteLLM proxy config.yaml")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--opa-url", default=os.environ.get("REGATE_OPA_URL"),
                   help="OPA sidecar URL (env REGATE_OPA_URL); without it a local OPA is started and stopped with regate")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                   help="PostgreSQL URL (env DATABASE_URL); without it a SQLite file is used")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="gunicorn workers (env REGATE_WORKERS; default 1)")
    p.set_defaults(run=_serve)

    bundle = sub.add_parser("bundle", help="bundle tools").add_subparsers(dest="bundle_command", required=True,
                                                                          metavar="SUBCOMMAND")
    p = bundle.add_parser("serve", help="serve the compiled bundle to OPAs (ETag, long polling), recompiling on change")
    p.add_argument("--config", required=True, help="the LiteLLM proxy config.yaml to compile and watch")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8282)
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between checks of the config file")
    _signing_options(p)
    p.set_defaults(run=_bundle_serve)

    p = sub.add_parser("demo", help="run everything locally and tour the LiteLLM JWT-docs flows")
    p.add_argument("--ci", action="store_true", default=os.environ.get("REGATE_DEMO_CI") == "1",
                   help="non-interactive: run the tour on free ports, exit 0 when every decision is as expected")
    p.set_defaults(run=_demo)

    dev = sub.add_parser("dev", help="local development identity provider").add_subparsers(
        dest="dev_command", required=True, metavar="SUBCOMMAND")
    p = dev.add_parser("token", help="mint a JWT signed by the dev identity provider's key")
    p.add_argument("--scope", action="append", help="a scope (repeatable)")
    p.add_argument("--claim", action="append", metavar="NAME=VALUE", help="a claim (repeatable); JSON values keep their type")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    p.add_argument("--audience", default="regate-dev", help="aud claim ('' for none)")
    p.add_argument("--issuer", help="iss claim (default: none)")
    p.add_argument("--key-dir", default=".regate/dev-idp")
    p.set_defaults(run=_dev_token)
    p = dev.add_parser("idp", help="serve the dev key's JWKS and OpenID discovery")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--key-dir", default=".regate/dev-idp")
    p.set_defaults(run=_dev_idp)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        for diagnostic in e.diagnostics:
            print(diagnostic, file=sys.stderr)
        return EXIT_USAGE
    except RegateError as e:
        print(f"regate {args.command}: {e.message} [{e.code}]", file=sys.stderr)
        return EXIT_USAGE if e.status < 500 else EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
