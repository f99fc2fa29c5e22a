"""The `authsvc` command: serve, migrate, clients, keys, users, token, demo, kek.

Every command reads `AUTHSVC_*` settings (see `authsvc.config`) and works on the database directly,
so it is usable before a server runs; a running server learns of changes through revocation events.
`--json` prints machine-readable output for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from authsvc import log
from authsvc.authority import Authority, open_authority
from authsvc.client_registry import ADMIN_SCOPES, GRANT_TYPES
from authsvc.config import ConfigError, Settings, warn_unknown_variables
from authsvc.errors import AuthError, InvalidRequest, TemporarilyUnavailable
from authsvc.keys.sealing import UnsealError, new_kek_text
from authsvc.serve import (
    dev_issuer,
    gateway_config,
    read_dev_credentials,
    run_event_loop,
    scheduling_policy,
)
from authsvc.storage import migrate
from authsvc.storage.engine import create_engine
from authsvc.storage.sql import DatabaseRefused, database_address, database_errors, printable_url

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _words(values: Sequence[str] | None) -> list[str]:
    return [word for value in values or () for word in value.split()]


async def _with_authority(settings: Settings, work: Callable[[Authority], Awaitable[int]]) -> int:
    authority = await open_authority(settings)
    try:
        return await work(authority)
    finally:
        await authority.close()


# migrate


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        async with database_errors():
            before = await migrate.current_revision(engine)
            await migrate.upgrade_database(engine, settings)
            after = await migrate.current_revision(engine)
    finally:
        await engine.dispose()
    _print(args, {"from": before, "to": after}, f"schema: {before or 'empty'} -> {after}")
    return 0


# clients


async def cmd_clients_create(args: argparse.Namespace, settings: Settings) -> int:
    # A public client (a browser or mobile app) signs users in: the code flow, with its refresh.
    grants = _words(args.grant) or (
        ["authorization_code", "refresh_token"] if args.public else ["client_credentials"]
    )
    scopes = _words(args.scope)
    audiences = _words(args.audience)
    if args.admin:
        grants = ["client_credentials"]
        scopes = list(dict.fromkeys([*scopes, *ADMIN_SCOPES]))
        audiences = list(dict.fromkeys([*audiences, settings.audience]))
    if not audiences:  # the registry refuses it too; this refusal names the flag
        raise InvalidRequest(
            "a client needs at least one audience, the APIs its tokens are for: give --audience"
        )

    async def work(authority: Authority) -> int:
        created = await authority.create_client(
            args.name,
            grant_types=grants,
            scopes=scopes,
            audiences=audiences,
            redirect_uris=args.redirect_uri or (),
            public=args.public,
            first_party=args.first_party,
        )
        data = {"client_id": created.client_id, "client_secret": created.client_secret}
        text = f"client_id:     {created.client_id}\n"
        if created.client_secret:
            text += f"client_secret: {created.client_secret}\n(shown once: store it now)"
        _print(args, data, text.rstrip())
        return 0

    return await _with_authority(settings, work)


async def cmd_clients_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(authority: Authority) -> int:
        clients = await authority.list_clients()
        rows = [
            {
                "client_id": c.client_id,
                "name": c.name,
                "public": c.public,
                "grant_types": list(c.grant_types),
                "scopes": list(c.scopes),
                "audiences": list(c.audiences),
                "redirect_uris": list(c.redirect_uris),
                "disabled": c.disabled_at is not None,
            }
            for c in clients
        ]
        text = "\n".join(
            f"{c.client_id:<20} {c.name:<20} {'disabled' if c.disabled_at else 'enabled':<9} "
            f"{' '.join(c.grant_types)}"
            for c in clients
        )
        _print(args, rows, text or "no clients")
        return 0

    return await _with_authority(settings, work)


async def cmd_clients_disable(args: argparse.Namespace, settings: Settings) -> int:
    async def work(authority: Authority) -> int:
        count = await authority.revoke_client(args.client_id, reason=args.reason, disable=True)
        _print(
            args,
            {"client_id": args.client_id, "families_revoked": count},
            f"disabled {args.client_id}; revoked {count} sessions and its access tokens",
        )
        return 0

    return await _with_authority(settings, work)


async def cmd_clients_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    async def work(authority: Authority) -> int:
        created = await authority.rotate_client_secret(args.client_id)
        _print(
            args,
            {"client_id": created.client_id, "client_secret": created.client_secret},
            f"client_secret: {created.client_secret}\n(shown once; the old secret no longer works)",
        )
        return 0

    return await _with_authority(settings, work)


# keys


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(authority: Authority) -> int:
        rows = [
            {
                "kid": r.kid,
                "alg": r.alg,
                "state": r.state,
                "published_at": r.published_at,
                "activated_at": r.activated_at,
                "retired_at": r.retired_at,
            }
            for r in authority.publish_keys().records
        ]
        text = "\n".join(f"{r['kid']}  {r['alg']:<7} {r['state']}" for r in rows)
        _print(args, rows, text)
        return 0

    return await _with_authority(settings, work)


async def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    async def work(authority: Authority) -> int:
        before = authority.publish_keys().signer.kid
        result = await authority.rotate_keys(immediate=args.immediate, compromised=args.compromised)
        if result.active_kid == before and not (args.immediate or args.compromised):
            text = (
                f"active key unchanged ({before}): the next key has not been published for one "
                f"JWKS cache lifetime ({settings.jwks_max_age}s) yet; retry later, pass "
                "--immediate to sign with it now, or --compromised if the current key leaked"
            )
        else:
            text = f"active key: {result.active_kid}\nnext key:   {result.published_kid}"
            if args.compromised and result.active_kid != before:
                text += (
                    f"\npurged:     {before} (its access tokens no longer verify; "
                    "refresh tokens still rotate)"
                )
        _print(args, {"active_kid": result.active_kid, "next_kid": result.published_kid}, text)
        return 0

    return await _with_authority(settings, work)


# users


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for a password: pass --password-stdin")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again:    "):
        raise ConfigError("the passwords differ")
    return first


async def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args)

    async def work(authority: Authority) -> int:
        subject = await authority.create_user(args.username, password)
        _print(args, {"subject": subject, "username": args.username}, f"subject: {subject}")
        return 0

    return await _with_authority(settings, work)


# token and demo


async def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    client_id, secret = args.client_id, args.client_secret
    if not client_id:
        demo = read_dev_credentials(settings, "pass --client-id and --client-secret")["demo"]
        client_id, secret = demo["client_id"], demo["client_secret"]
    elif secret is None:
        # Kept off the command line (and so out of `ps` and shell history): asked at a terminal
        # without echo, read from a pipe otherwise.
        try:
            secret = (
                getpass.getpass("client secret: ")
                if sys.stdin.isatty()
                else sys.stdin.readline().strip()
            )
        except EOFError:  # Ctrl-D at the prompt
            secret = ""
    if not secret:  # nothing typed or piped, or an empty --client-secret
        raise InvalidRequest(
            "no client secret: type it at the prompt, pipe it on stdin, or pass --client-secret"
        )

    async def work(authority: Authority) -> int:
        issued = await authority.client_credentials(
            client_id=client_id,
            client_secret=secret,
            scope=_words(args.scope),
            audience=_words(args.audience),
        )
        _print(
            args,
            {"access_token": issued.token, "expires_in": issued.expires_in},
            issued.token,
        )
        return 0

    return await _with_authority(settings, work)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from authsvc.demo import run_demo

    return await run_demo(
        settings,
        read_dev_credentials(settings, "point AUTHSVC_DATA_DIR at the dev server's data directory"),
    )


async def cmd_kek(args: argparse.Namespace, settings: Settings) -> int:
    print(new_kek_text())
    return 0


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from authsvc.serve import serve

    return await serve(settings)


async def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    """The OAuth 2.1 HTTP gateway, in front of an authsvc reached over gRPC."""
    from authsvc_gateway.config import ConfigError as GatewayConfigError
    from authsvc_gateway.server import UpstreamUnavailable
    from authsvc_gateway.server import serve as serve_gateway

    scheduling = scheduling_policy(settings)
    logging.getLogger(__name__).info("scheduling", extra={"scheduling": scheduling})
    try:
        await serve_gateway(gateway_config(settings))
    except GatewayConfigError as exc:  # found at start: another issuer, a refused client
        raise ConfigError(str(exc)) from exc
    except UpstreamUnavailable as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(handler: Handler, args: argparse.Namespace, settings: Settings) -> int:
    """Run `handler`, telling of a database that failed it which one it was: the URL (password
    hidden) and the address tried. Only here is the URL at hand; the store's errors lack it."""
    try:
        return await handler(args, settings)
    except DatabaseRefused as exc:
        raise exc.naming(settings.database_url) from exc
    except TemporarilyUnavailable:
        # Its own line, before the error's: that one stays the last line, as docs/replicas.md
        # quotes it.
        address = database_address(settings.database_url)
        at = f": the database at {address}" if address else ""
        print(
            f"authsvc: AUTHSVC_DATABASE_URL={printable_url(settings.database_url)}{at}",
            file=sys.stderr,
        )
        raise


class _CommandParser(argparse.ArgumentParser):
    """A (sub)command's parser: it takes --json too, so `authsvc clients list --json` works as
    well as `authsvc --json clients list`. SUPPRESS keeps a --json given before the command."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsvc", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    serve = commands.add_parser("serve", help="run the gRPC server (and the gateway in dev)")
    serve.add_argument("--dev", action="store_true", help="dev mode: generate a KEK, bootstrap")
    serve.set_defaults(handler=cmd_serve)
    commands.add_parser(
        "gateway", help="run the OAuth 2.1 HTTP gateway in front of a running authsvc"
    ).set_defaults(handler=cmd_gateway)
    commands.add_parser("migrate", help="bring the schema to head").set_defaults(
        handler=cmd_migrate
    )
    commands.add_parser("kek", help="print a new key-encryption key").set_defaults(handler=cmd_kek)
    commands.add_parser("demo", help="call the dev server as the demo client").set_defaults(
        handler=cmd_demo
    )

    clients = commands.add_parser("clients", help="OAuth clients").add_subparsers(
        dest="action", required=True
    )
    create = clients.add_parser("create", help="register a client; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--grant", action="append", help=f"one of {', '.join(GRANT_TYPES)}")
    create.add_argument("--scope", action="append", help="an allowed scope (repeat, or quote)")
    create.add_argument(
        "--audience", action="append", help="an API its tokens are for (at least one)"
    )
    create.add_argument("--redirect-uri", action="append", help="an exact redirect URI")
    create.add_argument("--public", action="store_true", help="no secret; PKCE only")
    create.add_argument("--first-party", action="store_true", help="skip the consent page")
    create.add_argument("--admin", action="store_true", help="every authsvc permission")
    create.set_defaults(handler=cmd_clients_create)
    clients.add_parser("list").set_defaults(handler=cmd_clients_list)
    disable = clients.add_parser("disable", help="disable and revoke every token")
    disable.add_argument("client_id")
    disable.add_argument("--reason", default="disabled by operator")
    disable.set_defaults(handler=cmd_clients_disable)
    rotate_secret = clients.add_parser("rotate-secret", help="a new secret; the old one dies")
    rotate_secret.add_argument("client_id")
    rotate_secret.set_defaults(handler=cmd_clients_rotate_secret)

    keys = commands.add_parser("keys", help="the signing key ring").add_subparsers(
        dest="action", required=True
    )
    keys.add_parser("list").set_defaults(handler=cmd_keys_list)
    rotate = keys.add_parser("rotate", help="promote the next key, retire the current one")
    rotate.add_argument(
        "--immediate", action="store_true", help="sign with the next key now, without waiting"
    )
    rotate.add_argument(
        "--compromised",
        action="store_true",
        help="the current key leaked: sign with the next key now and purge the current one, "
        "so its access tokens stop verifying everywhere",
    )
    rotate.set_defaults(handler=cmd_keys_rotate)

    users = commands.add_parser("users", help="users for the gateway's login").add_subparsers(
        dest="action", required=True
    )
    user_create = users.add_parser("create")
    user_create.add_argument("--username", required=True)
    user_create.add_argument("--password-stdin", action="store_true")
    user_create.set_defaults(handler=cmd_users_create)

    token = commands.add_parser("token", help="mint a client-credentials token (dev)")
    token.add_argument("--client-id", help="default: the dev demo client")
    token.add_argument("--client-secret", help="default: read from stdin")
    token.add_argument("--scope", action="append")
    token.add_argument("--audience", action="append")
    token.set_defaults(handler=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides: dict[str, Any] = {}
        if getattr(args, "dev", False):
            overrides = {"dev": True, "gateway_embedded": True}
        settings = dev_issuer(Settings.from_env(**overrides), os.environ)
        log.configure(settings.log_level)
        warn_unknown_variables()
        handler: Handler = args.handler
        return run_event_loop(_run(handler, args, settings))
    except (ConfigError, UnsealError) as exc:
        # A key that will not unseal is almost always the wrong AUTHSVC_KEK: the message says so.
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:
        print(f"authsvc: {exc.code}: {exc.description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
