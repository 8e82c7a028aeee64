"""Calling a ccpush's HTTP API from the command line (standard library only), and finding
the token to call it with."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from pydantic import ValidationError

from ccpush.settings import Settings, env_name

DEFAULT_URL: Final = "http://127.0.0.1:8080"
URL_VARIABLE: Final = env_name("url")
TOKEN_VARIABLE: Final = env_name("token")
TIMEOUT: Final = 120.0
"""Seconds to wait for an answer: a test push waits for the receiver (the push timeout)."""
USAGE: Final = 2
"""The exit code of a command given wrongly (as typer's own usage errors)."""


class CliError(Exception):
    """What to tell the user, in a line or two, and the exit code."""

    def __init__(self, *lines: str, code: int = 1) -> None:
        super().__init__(lines[0])
        self.lines = lines
        self.code = code


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    """The JSON answered (None for an empty body)."""


class _RedirectsRefused(urllib.request.HTTPRedirectHandler):
    """A redirect is an error to report, not followed: the token must go nowhere else."""

    def redirect_request(self, *_: object) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_RedirectsRefused)


class ApiClient:
    """One ccpush API, called with one bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(
                f"invalid --url ({URL_VARIABLE}) {base_url!r}: give http(s)://host:port",
                code=USAGE,
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self.call("GET", path).body

    def get_all(self, path: str) -> dict[str, Any]:
        """Every item of a list route, following its pages, as one page: ``{"items": [...],
        "nextCursor": null}``."""
        page = self.get(path)
        items = list(page["items"])
        while page.get("nextCursor"):
            page = self.get(f"{path}?{urlencode({'cursor': page['nextCursor']})}")
            items.extend(page["items"])
        return {"items": items, "nextCursor": None}

    def post(self, path: str, body: object = None) -> Any:
        return self.call("POST", path, body).body

    def patch(self, path: str, body: object) -> Any:
        return self.call("PATCH", path, body).body

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path).body

    def call(self, method: str, path: str, body: object = None) -> Answer:
        """The API's answer (2xx), or CliError saying what the API or the network said."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme was checked: http(s)
            self.base_url + path, data=data, method=method, headers=self._headers(data)
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as answer:
                return Answer(answer.status, _json(answer.read()))
        except urllib.error.HTTPError as error:
            with error:
                raise CliError(
                    *error_lines(error.code, error.reason, _json(error.read()))
                ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise CliError(f"cannot reach {self.base_url}: {reason}") from None

    def _headers(self, data: bytes | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        return headers


def _json(raw: bytes) -> Any:
    """The JSON of an answer; text that is not JSON (a proxy's error page, /metrics) as is."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def error_lines(status: int, reason: str, body: Any) -> list[str]:
    """An API error in one or two lines: its message, status and code; then its problems."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return [f"the API answered {status} {reason}".rstrip()]
    lines = [f"{error.get('message')} ({status} {error.get('code')})"]
    problems = [p for p in error.get("problems") or [] if isinstance(p, dict)]
    if problems:
        lines.append("; ".join(f"{p.get('field')}: {p.get('reason')}" for p in problems))
    return lines


def path(*parts: str) -> str:
    """An API path from ``/v1`` and ``parts``, each escaped (an id is never a path of its own)."""
    return "/v1/" + "/".join(quote(part, safe="") for part in parts)


def resolve_token(given: str | None) -> str:
    """The token to call the API with: ``--token`` (``CCPUSH_TOKEN``), else the admin token
    of this machine's ccpush: ``CCPUSH_ADMIN_TOKEN``, else ``<data dir>/admin-token``."""
    if given:
        return given
    try:
        settings = Settings()
    except ValidationError as exc:
        raise CliError(
            f"no {TOKEN_VARIABLE}, and the local settings cannot be read for the admin token:"
            f" {exc.errors()[0]['msg']}",
            code=USAGE,
        ) from None
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    try:
        return settings.admin_token_path.read_text().strip()
    except OSError:
        raise CliError(
            f"no token: set {TOKEN_VARIABLE} (or --token), or run where ccpush keeps its admin"
            f" token ({settings.admin_token_path} is not readable)",
            code=USAGE,
        ) from None


def connect(url: str, token: str | None) -> ApiClient:
    return ApiClient(url, resolve_token(token))
