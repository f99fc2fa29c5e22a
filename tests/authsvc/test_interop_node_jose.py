"""Interop beyond Python: our access tokens verify in `jose` (panva/jose, Node.js) against the JWK
Set PublishKeys serves. Skipped, with the reason, when node/npm is missing or jose cannot be
installed from the npm registry within a short bound."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.testing import RunningAuthority

JOSE_VERSION = "jose@5"
INSTALL_BOUND = 90  # seconds
VERIFY_JS = """
const jose = require('jose');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
(async () => {
  const keys = jose.createLocalJWKSet(JSON.parse(input.jwks));
  try {
    const { payload, protectedHeader } = await jose.jwtVerify(input.token, keys, {
      issuer: input.issuer, audience: input.audience, typ: 'at+jwt', algorithms: [input.alg],
    });
    process.stdout.write(JSON.stringify({ ok: true, payload, header: protectedHeader }));
  } catch (error) {
    process.stdout.write(JSON.stringify({ ok: false, code: error.code }));
  }
})();
"""


@pytest.fixture(scope="session")
def node_jose(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with jose installed and verify.js beside it."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node/npm are not on PATH: the non-Python JOSE interop check cannot run")
    folder = tmp_path_factory.mktemp("node-jose")
    try:
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", JOSE_VERSION],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=INSTALL_BOUND,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"`npm install {JOSE_VERSION}` took over {INSTALL_BOUND}s (offline registry?)")
    if installed.returncode != 0:
        pytest.skip(f"`npm install {JOSE_VERSION}` failed: {installed.stderr.strip()[-300:]}")
    (folder / "verify.js").write_text(VERIFY_JS)
    return folder


async def verify_in_node(folder: Path, **request: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        "verify.js",
        cwd=folder,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), 30)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_access_token_verifies_in_node_jose(
    node_jose: Path, running: RunningAuthority, tokens, pair: pb.TokenPair
) -> None:
    keys = await tokens.PublishKeys(pb.PublishKeysRequest())
    result = await verify_in_node(
        node_jose,
        jwks=keys.jwks_json,
        token=pair.access_token,
        issuer=running.settings.issuer,
        audience="api",
        alg="EdDSA",
    )
    assert result["ok"], result
    assert result["payload"]["sub"] == "alice"
    assert result["payload"]["sid"] == pair.family_id
    assert result["header"]["typ"] == "at+jwt"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param({"audience": "third-api"}, "ERR_JWT_CLAIM_VALIDATION_FAILED", id="audience"),
        pytest.param(
            {"issuer": "https://evil.example"}, "ERR_JWT_CLAIM_VALIDATION_FAILED", id="iss"
        ),
        pytest.param({"alg": "ES256"}, "ERR_JOSE_ALG_NOT_ALLOWED", id="algorithm-pinned"),
    ],
)
async def test_node_jose_refuses_what_it_should(
    node_jose: Path,
    running: RunningAuthority,
    tokens,
    pair: pb.TokenPair,
    change: dict[str, str],
    code: str,
) -> None:
    keys = await tokens.PublishKeys(pb.PublishKeysRequest())
    request = {
        "jwks": keys.jwks_json,
        "token": pair.access_token,
        "issuer": running.settings.issuer,
        "audience": "api",
        "alg": "EdDSA",
        **change,
    }
    assert await verify_in_node(node_jose, **request) == {"ok": False, "code": code}
