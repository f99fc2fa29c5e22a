"""The clients distribution installs alone and works without the server's dependencies.

SLOW (one `pip install` into a fresh virtualenv, 20-60 s depending on pip's wheel cache). It is
the only test that proves the dependency promise of clients/pyproject.toml, so it always runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[2] / "clients"

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, time, warnings
    from concurrent import futures

    import grpc
    from joserfc import jwt
    from joserfc.errors import SecurityWarning
    from joserfc.jwk import OKPKey

    import authsvc_client
    from authsvc_client import AuthInterceptor, WhenStale, current_claims, parse_jwks
    from authsvc_client import verify_access_token
    from authsvc_client.v1 import authsvc_pb2, authsvc_pb2_grpc

    for absent in ("sqlalchemy", "argon2", "starlette", "uvicorn", "aiosqlite", "authsvc"):
        assert importlib.util.find_spec(absent) is None, f"{absent} is installed"

    key = OKPKey.generate_key("Ed25519", auto_kid=True)
    jwks = {"keys": [{**key.as_dict(private=False), "alg": "EdDSA", "use": "sig"}]}
    now = int(time.time())
    claims = {"iss": "https://auth.test", "sub": "alice", "aud": ["notes"], "exp": now + 60,
              "iat": now, "jti": "1", "client_id": "web", "scope": "notes:read"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        header = {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid}
        token = jwt.encode(header, claims, key, algorithms=["EdDSA"])
    keys = parse_jwks(json.dumps(jwks))
    verified = verify_access_token(
        token, keys=keys, issuer="https://auth.test", audience="notes", now=now
    )
    assert verified.claims.sub == "alice"

    # A protected sync server, keys installed by hand (no authsvc to fetch them from).
    auth = AuthInterceptor("127.0.0.1:1", issuer="https://auth.test", audience="notes",
                           when_stale=WhenStale.ACCEPT)
    auth.verifier.keys.install(keys)

    def who(request, context):
        return authsvc_pb2.PublishKeysResponse(jwks_json=current_claims().sub)

    handler = grpc.method_handlers_generic_handler("authsvc.v1.TokenService", {
        "PublishKeys": grpc.unary_unary_rpc_method_handler(
            who,
            request_deserializer=authsvc_pb2.PublishKeysRequest.FromString,
            response_serializer=authsvc_pb2.PublishKeysResponse.SerializeToString,
        )
    })
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[auth])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    auth.start(ready_timeout=0.1)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = authsvc_pb2_grpc.TokenServiceStub(channel)
        answer = stub.PublishKeys(authsvc_pb2.PublishKeysRequest(),
                                  metadata=(("authorization", f"Bearer {token}"),))
        assert answer.jwks_json == "alice", answer
        try:
            stub.PublishKeys(authsvc_pb2.PublishKeysRequest())
            raise AssertionError("a call without a token passed")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    server.stop(None)
    auth.close()
    print("clients distribution works:", authsvc_client.__file__)
    """
)


@pytest.mark.timeout(300)
def test_the_clients_distribution_installs_and_works_alone(tmp_path: Path) -> None:
    source = tmp_path / "clients"
    shutil.copytree(
        CLIENTS,
        source,
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "examples"),
    )
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for heavy in ("sqlalchemy", "argon2", "starlette", "uvicorn"):
        assert heavy not in freeze
    run = subprocess.run(
        [python, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the repository: nothing importable by accident
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert str(environment) in run.stdout
    assert sys.prefix != str(environment)
