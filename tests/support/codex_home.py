"""Build a private CODEX_HOME that points the real codex CLI at the local mock server.

The login written here is a made-up ChatGPT-kind login (unsigned JWT) that only reaches 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

PROVIDER_ID = "mock"
ACCOUNT_ID = "acct-test"
USER_ID = "user-test"

_CONFIG_TEMPLATE = """\
model_provider = "{provider}"
chatgpt_base_url = "http://127.0.0.1:{port}/backend-api/"
check_for_update_on_startup = false

[model_providers.{provider}]
name = "Mock OpenAI"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
requires_openai_auth = true
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = {idle_ms}

[analytics]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
plugins = false
remote_plugin = false
apps = false
unbounded_connection_retries = false
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fake_jwt(*, plan: str = "plus", lifetime_sec: int = 30 * 24 * 3600) -> str:
    """An unsigned JWT whose claims make codex treat the login as a ChatGPT plan."""
    now = int(time.time())
    header = {"alg": "none", "typ": "JWT"}
    claims = {
        "iat": now,
        "exp": now + lifetime_sec,
        "email": "test@example.invalid",
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": plan,
            "chatgpt_user_id": USER_ID,
            "chatgpt_account_id": ACCOUNT_ID,
        },
    }
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), b"sig")
    return ".".join(_b64url(p) for p in parts)


def auth_document(*, plan: str = "plus") -> dict[str, object]:
    """The auth.json content of a ChatGPT login with fresh test tokens."""
    token = fake_jwt(plan=plan)
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "last_refresh": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "tokens": {
            "id_token": token,
            "access_token": token,
            "refresh_token": "x",
            "account_id": ACCOUNT_ID,
        },
    }


def config_toml(port: int, *, idle_ms: int = 20_000) -> str:
    """config.toml text routing every codex request to the mock on 127.0.0.1:port."""
    return _CONFIG_TEMPLATE.format(provider=PROVIDER_ID, port=port, idle_ms=idle_ms)


def make_codex_home(
    root: Path, *, port: int, logged_out: bool = False, plan: str = "plus", idle_ms: int = 20_000
) -> Path:
    """Create root (if needed) as a CODEX_HOME bound to the mock's port and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(config_toml(port, idle_ms=idle_ms), encoding="utf-8")
    if not logged_out:
        # codex rewrites auth.json on refresh; 0600 matches what it creates itself.
        auth = root / "auth.json"
        auth.write_text(json.dumps(auth_document(plan=plan), indent=2), encoding="utf-8")
        auth.chmod(0o600)
    return root


def codex_env(
    port: int, *, codex_home: Path | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a codex child (base defaults to os.environ): token refreshes stay local."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"http://127.0.0.1:{port}/oauth/token",
            "NO_COLOR": "1",
            "RUST_LOG": env.get("RUST_LOG", "error"),
        }
    )
    # An API key in the environment would turn the login into the API-key kind (no image tool).
    for name in ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    if codex_home is not None:
        env["CODEX_HOME"] = str(codex_home)
    return env
