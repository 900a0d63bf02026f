"""A local stand-in for the Hugging Face Hub HTTP API: what `huggingface_hub` 2.x calls to create a repository, create
a branch and upload a folder, served on 127.0.0.1 so upload code runs in tests without any network.

Use it through the `local_hub` pytest fixture defined here (registered for `tests/hub/` by its conftest.py). Another
test folder imports it into its own conftest.py:

    from tests.hub.hub_stand_in import local_hub  # noqa: F401  (registers the fixture)

    def test_push(local_hub, tiny_model_dir):
        push_to_hub(tiny_model_dir, "stand-in-user/tiny", token=local_hub.token, private=True, revision="v1")
        repo = local_hub.repos["stand-in-user/tiny"]
        assert repo.private and repo.commits[-1].branch == "v1"
        assert repo.files("v1")["README.md"].startswith(b"---")

The fixture starts a `HubStandIn` (a threaded `http.server` on a free loopback port), points huggingface_hub at it
(`huggingface_hub.constants.ENDPOINT` and `HF_ENDPOINT`, read by every `HfApi()` created afterwards), lifts offline
mode for that test only (`huggingface_hub.constants.HF_HUB_OFFLINE = False`, checked at each request, and
`HF_HUB_OFFLINE=0`), and isolates the login: `HF_TOKEN` unset and `constants.HF_TOKEN_PATH` a missing file, so each
test decides whether a token exists (`token=local_hub.token`, or `monkeypatch.setenv("HF_TOKEN", local_hub.token)`).
`HF_HOME` (and the xet cache) point into the test's `tmp_path`, so an upload writes nothing into the user's cache.
Everything is restored after the test. `local_hub.subprocess_env()` returns the variables that point a child
process (a training script run with `subprocess`) at the stand-in, with the token.

API:

    HubStandIn(token="hf_stand_in_token", user="stand-in-user")   # a context manager: serves inside `with`
        .endpoint -> "http://127.0.0.1:<port>"
        .token, .user                 the only accepted token (else 401); the namespace of ids given without one
        .repos -> {repo_id: StandInRepo}
        .requests -> [(method, path)]  every request served, in order (query strings dropped)
        .subprocess_env() -> {"HF_ENDPOINT": ..., "HF_HUB_OFFLINE": "0", "HF_TOKEN": ...}
    StandInRepo: .repo_id, .private, .branches {name: {path: bytes}}, .heads {name: oid}, .commits, .files(branch)
    StandInCommit: .oid, .branch, .message, .description, .added {path: bytes}, .deleted [path]

Endpoints (huggingface_hub 2.4: `hf_api.py`, `_commit_api.py`, `_upload_pipeline.py`):

    POST /api/repos/create                           create_repo; 409 with the repo's url if it exists
    POST /api/validate-yaml                          upload_folder validates README.md's metadata before hashing
    POST /api/models/{repo}/branch/{branch}          create_branch from `startingPoint` or main; 409 if it exists
    POST /api/models/{repo}/preupload/{revision}     upload modes: "regular" for every file, so no LFS / Xet transfer
    POST /api/models/{repo}/commit/{revision}        NDJSON: header, file (base64 content), deletedFile, deletedFolder
    GET  /api/models/{repo}[/revision/{revision}]    repo_info (id, private, sha, siblings)
    GET  /api/models/{repo}/refs                     list_repo_refs (branches)
    GET  /api/whoami-v2                              whoami
    GET  /api/agent-harnesses                        huggingface_hub's agent-detection registry (empty; no token)

A missing repository or revision answers 404 with the Hub's `X-Error-Code` (RepoNotFound / RevisionNotFound), an `lfsFile`
in a commit 400 (this stand-in never asks for LFS), anything else 404; all are recorded in `requests`.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest


@dataclass
class StandInCommit:
    oid: str
    branch: str
    message: str
    description: str
    added: dict[str, bytes]
    deleted: list[str]


@dataclass
class StandInRepo:
    repo_id: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=dict)
    commits: list[StandInCommit] = field(default_factory=list)

    def files(self, branch: str = "main") -> dict[str, bytes]:
        """The files on `branch` after every commit so far."""
        return dict(self.branches[branch])


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra or {}


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "_create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "_validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<branch>.+)$"), "_create_branch"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<revision>.+)$"), "_preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<revision>.+)$"), "_commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/refs$"), "_refs"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<revision>.+))?$"), "_repo_info"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "_whoami"),
]


class HubStandIn:
    """The stand-in server and its state (see the module docstring)."""

    def __init__(self, token: str = "hf_stand_in_token", user: str = "stand-in-user"):
        self.token, self.user = token, user
        self.repos: dict[str, StandInRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def __enter__(self) -> "HubStandIn":
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback only, a free port
        self._server.daemon_threads = True
        # A short poll interval: `shutdown` waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def subprocess_env(self) -> dict[str, str]:
        """Environment variables pointing a child process at this stand-in, logged in with its token."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": self.token}

    # ---- request handling (called by the handler, under the lock) ----

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append((method, path))
            try:
                if method == "GET" and path == "/api/agent-harnesses":  # huggingface_hub's telemetry, unauthenticated
                    return 200, {}, {"standardEnvVars": [], "harnesses": {}}
                if headers.get("authorization") != f"Bearer {self.token}":
                    raise _HubError(401, "Invalid credentials in Authorization header")
                for route_method, pattern, name in _ROUTES:
                    match = pattern.match(path)
                    if route_method == method and match:
                        arguments = {
                            key: unquote(value) for key, value in match.groupdict().items() if value is not None
                        }
                        return 200, {}, getattr(self, name)(body=body, **arguments)
                raise _HubError(404, f"The stand-in Hub does not implement {method} {path}")
            except _HubError as error:
                response_headers = {"X-Error-Code": error.error_code} if error.error_code else {}
                return error.status, response_headers, {"error": error.message, **error.extra}

    def _repo(self, repo_id: str) -> StandInRepo:
        if repo_id not in self.repos:
            raise _HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return self.repos[repo_id]

    def _branch(self, repo: StandInRepo, revision: str) -> str:
        if revision not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return revision

    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join(parts).encode()).hexdigest()

    def _create_repo(self, body: bytes) -> dict:
        payload = json.loads(body)
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.repos:
            raise _HubError(409, "You already created this model repo", extra={"url": url})
        repo = StandInRepo(repo_id=repo_id, private=payload.get("visibility") == "private")
        repo.heads["main"] = self._new_oid(repo_id, "initial commit")
        self.repos[repo_id] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def _validate_yaml(self, body: bytes) -> dict:
        import yaml

        content = json.loads(body).get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as error:
                raise _HubError(400, "Invalid metadata", extra={"errors": [{"message": str(error)}]}) from None
        return {"errors": [], "warnings": []}

    def _create_branch(self, body: bytes, repo: str, branch: str) -> dict:
        stored = self._repo(repo)
        if branch in stored.branches:
            raise _HubError(409, f"Branch {branch} already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        stored.branches[branch] = dict(stored.branches[self._branch(stored, start)])
        stored.heads[branch] = stored.heads[start]
        return {}

    def _preupload(self, body: bytes, repo: str, revision: str) -> dict:
        stored = self._repo(repo)
        self._branch(stored, revision)
        files = json.loads(body)["files"]
        return {
            "files": [
                {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for item in files
            ],
            "commitOid": stored.heads[revision],
        }

    def _commit(self, body: bytes, repo: str, revision: str) -> dict:
        stored = self._repo(repo)
        branch = self._branch(stored, revision)
        header, added, deleted = {}, {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                raise _HubError(400, f"The stand-in Hub accepts regular files only, got a {key!r} operation")
        files = stored.branches[branch]
        for path in deleted:
            for existing in [name for name in files if name == path or name.startswith(path.rstrip("/") + "/")]:
                del files[existing]
        files.update(added)
        oid = self._new_oid(stored.heads[branch], header.get("summary", ""), *sorted(added))
        stored.heads[branch] = oid
        stored.commits.append(
            StandInCommit(oid, branch, header.get("summary", ""), header.get("description", ""), added, deleted)
        )
        return {"commitUrl": f"{self.endpoint}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    def _refs(self, body: bytes, repo: str) -> dict:
        stored = self._repo(repo)
        return {
            "branches": [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": stored.heads[name]}
                for name in stored.branches
            ],
            "converts": [],
            "tags": [],
        }

    def _repo_info(self, body: bytes, repo: str, revision: str = "main") -> dict:
        stored = self._repo(repo)
        branch = self._branch(stored, revision)
        return {
            "id": repo,
            "private": stored.private,
            "sha": stored.heads[branch],
            "siblings": [{"rfilename": name} for name in sorted(stored.branches[branch])],
        }

    def _whoami(self, body: bytes) -> dict:
        return {"type": "user", "name": self.user, "auth": {"type": "access_token", "accessToken": {"role": "write"}}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stand_in: HubStandIn

    def log_message(self, format: str, *args) -> None:  # quiet: the test output stays readable
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        body = self._body() if method == "POST" else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, extra_headers, payload = self.stand_in.handle(method, urlsplit(self.path).path, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra_headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


@pytest.fixture
def local_hub(monkeypatch, tmp_path) -> HubStandIn:
    """A running `HubStandIn` that huggingface_hub talks to for this test (see the module docstring)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    home = Path(tmp_path) / "hf_home"
    with HubStandIn() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        # Nothing an upload writes (the xet session's logs, the agent registry cache) may land in the user's HF_HOME.
        monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
        for name, value in (
            ("HF_ENDPOINT", hub.endpoint),
            ("HF_HUB_OFFLINE", "0"),
            ("HF_HOME", str(home)),
            ("HF_XET_CACHE", str(home / "xet")),
        ):
            monkeypatch.setenv(name, value)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            monkeypatch.delenv(name, raising=False)
        yield hub
