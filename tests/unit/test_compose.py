"""The Docker path, checked without Docker: docker-compose.yml, its security-on
override, the Dockerfile and the archive-bucket step compose runs.

The compose file is validated against the Compose specification's JSON schema
(``../shared/compose-spec.json`` beside the repository; its absence is a
failure), and against the pipeline itself: every ``AUDITSTREAM_*`` variable
must be a settings field, every pipeline service must wait for ``topics``, and
the OpenSearch security choice must be the same on every side.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SECURE_OVERRIDE = REPO / "deploy" / "compose" / "opensearch-security.yml"
SECURE_ENV_EXAMPLE = REPO / "deploy" / "compose" / "opensearch-security.env.example"
BUCKET_SCRIPT = REPO / "deploy" / "compose" / "create_archive_bucket.py"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_SPEC = REPO.parent / "shared" / "compose-spec.json"

APP_IMAGE = "auditstream:local"
REQUIRED_SERVICES = {
    "kafka",
    "topics",
    "opensearch",
    "opensearch-dashboards",
    "s3",
    "worker",
    "sink-opensearch",
    "sink-archive",
    "simulator",
}
# Everything that reads or writes the pipeline's topics; must start after `topics`.
TOPIC_USERS = ("worker", "sink-opensearch", "sink-archive", "simulator")
# The CLI subcommands compose relies on (pipeline/cli.py and the command modules).
COMMANDS = {
    "topics": ["topics"],
    "worker": ["worker"],
    "sink-opensearch": ["sink", "opensearch"],
    "sink-archive": ["sink", "archive"],
    "simulator": ["simulate", "--rate", "50"],
}

OS_URL = "AUDITSTREAM_OPENSEARCH__URL"
OS_USERNAME = "AUDITSTREAM_OPENSEARCH__USERNAME"
OS_PASSWORD = "AUDITSTREAM_OPENSEARCH__PASSWORD"


# ---- loading --------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path} is missing"
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as `docker compose --env-file` reads them (no quoting used)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's ``$$``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        dollar, name, op, arg = match.groups()
        if dollar:
            return "$"
        current = variables.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op and op.endswith("?") and unset:
            raise ValueError(f"variable {name} is required: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge for what the override uses: mappings merge, the rest is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return override


def quickstart() -> dict[str, Any]:
    doc: dict[str, Any] = interpolate(load_yaml(COMPOSE_FILE), {})
    return doc


def security_on() -> dict[str, Any]:
    variables = read_env_file(SECURE_ENV_EXAMPLE)
    merged = merge(load_yaml(COMPOSE_FILE), load_yaml(SECURE_OVERRIDE))
    doc: dict[str, Any] = interpolate(merged, variables)
    return doc


VARIANTS = {"quickstart": quickstart, "security-on": security_on}


def env_value(value: Any) -> str | None:
    """How compose turns a YAML scalar into an environment value."""
    if value is None or isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else str(value)


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as the container gets it (list or mapping form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: env_value(value) for key, value in env.items()}


def is_true(value: str | None) -> bool:
    return str(value).strip().lower() == "true"


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def app_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in doc["services"].items() if svc.get("image") == APP_IMAGE}


def settings_env_names() -> set[str]:
    """``AUDITSTREAM_<SECTION>__<FIELD>`` for every field of every settings section."""
    names: set[str] = set()
    for section, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f"AUDITSTREAM_{section}__{sub}".upper() for sub in annotation.model_fields)
        else:
            names.add(f"AUDITSTREAM_{section}".upper())
    return names


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AUDITSTREAM_* from the caller's environment and no stray .env file."""
    for key in list(os.environ):
        if key.upper().startswith("AUDITSTREAM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


# ---- the Compose specification ---------------------------------------------


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.Draft7Validator:
    if not COMPOSE_SPEC.is_file():
        pytest.fail(
            f"the Compose specification schema is missing: expected {COMPOSE_SPEC} "
            "(shared/compose-spec.json beside the repository checkout; CI copies shared/ there)"
        )
    schema = json.loads(COMPOSE_SPEC.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize(
    "name, load",
    [
        ("docker-compose.yml", lambda: load_yaml(COMPOSE_FILE)),
        ("opensearch-security.yml", lambda: load_yaml(SECURE_OVERRIDE)),
        ("docker-compose.yml + opensearch-security.yml", security_on),
    ],
)
def test_compose_files_follow_the_compose_specification(
    compose_validator: jsonschema.Draft7Validator, name: str, load: Any
) -> None:
    errors = sorted(compose_validator.iter_errors(load()), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name} breaks the Compose specification:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors
    )


def test_quickstart_needs_no_variables() -> None:
    raw = load_yaml(COMPOSE_FILE)
    unresolved = [s for s in strings(raw) if re.search(r"\$(?!\$)", s.replace("$$", ""))]
    assert not unresolved, f"`docker compose up` must work without an env file: {unresolved}"


# ---- services and start order -----------------------------------------------


def test_every_service_the_pipeline_needs_is_defined() -> None:
    services = quickstart()["services"]
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


def test_pipeline_services_run_the_expected_commands() -> None:
    services = quickstart()["services"]
    for name, command in COMMANDS.items():
        assert services[name].get("image") == APP_IMAGE, f"{name} must run the auditstream image"
        assert services[name].get("command") == command, f"{name} must run `auditstream {command}`"


def test_topic_users_start_only_after_topics_completed() -> None:
    services = quickstart()["services"]
    assert depends_on(services["topics"]).get("kafka") == "service_healthy"
    for name in TOPIC_USERS:
        assert depends_on(services[name]).get("topics") == "service_completed_successfully", (
            f"{name} must wait for `topics` to complete successfully (Faust ignores topics "
            "created after it started; groups must be at the earliest offset first)"
        )


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_dependency_condition_can_be_met(variant: str) -> None:
    services = VARIANTS[variant]()["services"]
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is a one-shot step"
    for name in ("worker", "sink-opensearch", "sink-archive"):
        assert services[name].get("restart") in {"on-failure", "unless-stopped", "always"}


def test_sinks_wait_for_their_stores() -> None:
    services = quickstart()["services"]
    assert depends_on(services["sink-opensearch"]).get("opensearch") == "service_healthy"
    archive = depends_on(services["sink-archive"])
    assert archive.get("s3") == "service_healthy"
    assert archive.get("s3-init") == "service_completed_successfully"


# ---- images --------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_image_is_minio(variant: str) -> None:
    services = VARIANTS[variant]()["services"]
    for name, service in services.items():
        assert "minio" not in str(service.get("image", "")).lower(), f"{name}: MinIO is AGPL"
        assert "minio" not in json.dumps(service.get("build", "")).lower(), name


def test_images_are_pinned_to_the_versions_the_stack_uses() -> None:
    services = quickstart()["services"]
    kafka = services["kafka"]["image"]
    assert kafka.startswith("apache/kafka:"), kafka
    version = tuple(int(part) for part in kafka.split(":", 1)[1].split("."))
    assert version >= (4, 1, 0), kafka
    opensearch = services["opensearch"]["image"]
    assert re.fullmatch(r"opensearchproject/opensearch:2\.19\.\d+", opensearch), opensearch
    dashboards = services["opensearch-dashboards"]["image"]
    assert dashboards == opensearch.replace("/opensearch:", "/opensearch-dashboards:"), (
        "OpenSearch Dashboards must match the OpenSearch version exactly"
    )
    assert services["s3"]["image"] == "versity/versitygw:v1.8.0"


def test_s3_store_can_lock_objects_and_shares_credentials_with_the_pipeline() -> None:
    services = quickstart()["services"]
    s3 = services["s3"]
    command = s3["command"]
    assert "posix" in command
    posix_args = command[command.index("posix") + 1 :]
    assert "--versioning-dir" in posix_args, (
        "without a versioning dir versitygw refuses Object Lock"
    )
    root = posix_args[-1]
    for flag in ("--versioning-dir", "--sidecar"):
        if flag in posix_args:
            path = posix_args[posix_args.index(flag) + 1]
            assert not path.startswith(root.rstrip("/") + "/"), f"{flag} must lie outside {root}"
    s3_env = environment(s3)
    for name in ("sink-archive", "s3-init"):
        env = environment(services[name])
        assert env["AUDITSTREAM_ARCHIVE__BACKEND"] == "s3", name
        assert env["AUDITSTREAM_ARCHIVE__S3_ACCESS_KEY"] == s3_env["ROOT_ACCESS_KEY_ID"], name
        assert env["AUDITSTREAM_ARCHIVE__S3_SECRET_KEY"] == s3_env["ROOT_SECRET_ACCESS_KEY"], name


# ---- the security decision ----------------------------------------------------


def check_security_is_consistent(services: dict[str, Any]) -> bool:
    """Assert that OpenSearch, Dashboards and the pipeline agree; return whether it is off."""
    opensearch = environment(services["opensearch"])
    dashboards = environment(services["opensearch-dashboards"])
    hosts = json.loads(dashboards["OPENSEARCH_HOSTS"] or "[]")
    healthcheck = " ".join(services["opensearch"]["healthcheck"]["test"])
    envs = {name: environment(service) for name, service in services.items()}
    clients = {name: env for name, env in envs.items() if OS_URL in env}
    assert "sink-opensearch" in clients, f"sink-opensearch must set {OS_URL}"

    disabled = is_true(opensearch.get("DISABLE_SECURITY_PLUGIN"))
    if disabled:
        assert is_true(opensearch.get("DISABLE_INSTALL_DEMO_CONFIG"))
        assert is_true(dashboards.get("DISABLE_SECURITY_DASHBOARDS_PLUGIN"))
        assert hosts and all(h.startswith("http://") for h in hosts), hosts
        assert "http://localhost:9200" in healthcheck
        for name, env in clients.items():
            assert (env[OS_URL] or "").startswith("http://"), f"{name}: plugin off, so http://"
        for name, env in envs.items():
            assert not env.get(OS_PASSWORD) and not env.get(OS_USERNAME), (
                f"{name} sets OpenSearch credentials, but the security plugin is off"
            )
    else:
        assert opensearch.get("OPENSEARCH_INITIAL_ADMIN_PASSWORD"), "OpenSearch >= 2.12 needs it"
        assert not is_true(dashboards.get("DISABLE_SECURITY_DASHBOARDS_PLUGIN"))
        assert hosts and all(h.startswith("https://") for h in hosts), hosts
        assert "https://localhost:9200" in healthcheck
        for name, env in clients.items():
            assert (env[OS_URL] or "").startswith("https://"), f"{name}: plugin on, so https://"
            assert env.get(OS_USERNAME) and env.get(OS_PASSWORD), f"{name} needs credentials"
    return disabled


def test_quickstart_runs_opensearch_with_security_disabled() -> None:
    assert check_security_is_consistent(quickstart()["services"]) is True


def test_security_on_variant_is_consistent() -> None:
    assert check_security_is_consistent(security_on()["services"]) is False


def test_security_env_example_has_what_the_override_requires() -> None:
    variables = read_env_file(SECURE_ENV_EXAMPLE)
    interpolate(load_yaml(SECURE_OVERRIDE), variables)  # raises on a missing ${VAR:?}
    assert variables[OS_URL].startswith("https://")
    assert variables[OS_USERNAME] and variables[OS_PASSWORD]
    assert variables["AUDITSTREAM_OPENSEARCH__VERIFY_CERTS"] in {"true", "false"}
    if variables[OS_USERNAME] == "admin":
        assert variables[OS_PASSWORD] == variables["OPENSEARCH_INITIAL_ADMIN_PASSWORD"]
    assert not any("$" in value for value in variables.values()), "compose would interpolate it"


# ---- settings names and values ------------------------------------------------


def test_every_auditstream_variable_is_a_settings_field() -> None:
    known = settings_env_names()
    used: dict[str, str] = {}
    for path in (COMPOSE_FILE, SECURE_OVERRIDE):
        for text in strings(load_yaml(path)):
            for name in re.findall(r"\bAUDITSTREAM_[A-Za-z0-9_]+", text):
                used.setdefault(name, path.name)
    for name in read_env_file(SECURE_ENV_EXAMPLE):
        if name.startswith("AUDITSTREAM_"):
            used.setdefault(name, SECURE_ENV_EXAMPLE.name)
    assert used, "no AUDITSTREAM_* variables found: the parsing is broken"
    unknown = {name: where for name, where in used.items() if name not in known}
    assert not unknown, f"not fields of pipeline.settings.Settings: {unknown}"


def host_of(address: str) -> str:
    if "://" in address:
        return urlsplit(address).hostname or ""
    return address.rsplit(":", 1)[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pipeline_environments_are_valid_settings_naming_compose_services(
    variant: str, clean_env: pytest.MonkeyPatch
) -> None:
    doc = VARIANTS[variant]()
    services = doc["services"]
    assert set(COMMANDS) <= set(app_services(doc))
    for name, service in app_services(doc).items():
        env = {k: v for k, v in environment(service).items() if k.startswith("AUDITSTREAM_")}
        with clean_env.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value or "")
            try:
                settings = Settings(_env_file=None)
            except ValidationError as exc:
                pytest.fail(f"{variant}: {name}'s environment is not valid settings: {exc}")

        addresses = []
        if "AUDITSTREAM_KAFKA__BOOTSTRAP_SERVERS" in env:
            addresses += settings.kafka.bootstrap_servers.split(",")
        if OS_URL in env:
            addresses.append(settings.opensearch.url)
        if "AUDITSTREAM_ARCHIVE__S3_ENDPOINT" in env:
            addresses.append(settings.archive.s3_endpoint or "")
        for address in addresses:
            assert host_of(address) in services, f"{name}: {address} is not a compose service"
        if name in TOPIC_USERS:
            assert "AUDITSTREAM_KAFKA__BOOTSTRAP_SERVERS" in env, f"{name} needs Kafka"
        if name == "sink-archive":
            assert settings.archive.backend == "s3"
        if name == "worker":
            mounts = [str(v).split(":")[1] for v in service.get("volumes", [])]
            assert str(settings.worker.data_dir) in mounts, "worker state must be on a volume"


# ---- the Dockerfile ------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_builds_on_python_slim_and_installs_the_s3_and_zstd_extras() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases and all(base.startswith("python:3.11-slim") for base in bases), bases
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    match = re.search(r"pip install [^&;]*\.\[([a-z0-9,]+)\]", runs)
    assert match, "the image must `pip install .[s3,zstd]`"
    assert {"s3", "zstd"} <= set(match.group(1).split(",")), match.group(0)


def test_dockerfile_entrypoint_is_auditstream() -> None:
    entrypoints = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["auditstream"]


def test_dockerfile_does_not_run_as_root() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage never leaves root: add a USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"the image runs as {users[-1]}"


def test_dockerfile_copies_the_bucket_script_compose_runs() -> None:
    entrypoint = quickstart()["services"]["s3-init"]["entrypoint"]
    copies = " ".join(args for keyword, args in final_stage() if keyword == "COPY")
    assert f"{BUCKET_SCRIPT.relative_to(REPO)} {entrypoint[-1]}" in copies


# ---- the archive-bucket step ---------------------------------------------------


def load_bucket_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("create_archive_bucket", BUCKET_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def s3_stub() -> Iterator[tuple[Any, Any]]:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "s3",
        endpoint_url="http://s3:7070",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


CREATE = {"Bucket": "audit", "ObjectLockEnabledForBucket": True}
LOCK_ON = {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled"}}


def test_bucket_step_creates_the_bucket_with_object_lock(s3_stub: tuple[Any, Any]) -> None:
    client, stubber = s3_stub
    stubber.add_response("create_bucket", {}, CREATE)
    stubber.add_response("get_object_lock_configuration", LOCK_ON, {"Bucket": "audit"})
    assert load_bucket_script().ensure_locked_bucket(client, "audit", "us-east-1") == "created"


def test_bucket_step_accepts_its_own_locked_bucket_again(s3_stub: tuple[Any, Any]) -> None:
    client, stubber = s3_stub
    stubber.add_client_error("create_bucket", "BucketAlreadyOwnedByYou", http_status_code=409)
    stubber.add_response("get_object_lock_configuration", LOCK_ON, {"Bucket": "audit"})
    result = load_bucket_script().ensure_locked_bucket(client, "audit", "us-east-1")
    assert result == "already there"


def test_bucket_step_refuses_a_bucket_without_object_lock(s3_stub: tuple[Any, Any]) -> None:
    client, stubber = s3_stub
    stubber.add_client_error("create_bucket", "BucketAlreadyOwnedByYou", http_status_code=409)
    stubber.add_client_error(
        "get_object_lock_configuration", "ObjectLockConfigurationNotFoundError", 404
    )
    with pytest.raises(RuntimeError, match="no Object Lock"):
        load_bucket_script().ensure_locked_bucket(client, "audit", "us-east-1")


def test_bucket_step_refuses_someone_elses_bucket(s3_stub: tuple[Any, Any]) -> None:
    client, stubber = s3_stub
    stubber.add_client_error("create_bucket", "BucketAlreadyExists", http_status_code=409)
    with pytest.raises(RuntimeError, match="another account"):
        load_bucket_script().ensure_locked_bucket(client, "audit", "us-east-1")


def test_bucket_step_reads_the_sinks_settings(
    s3_stub: tuple[Any, Any], clean_env: pytest.MonkeyPatch
) -> None:
    client, stubber = s3_stub
    script = load_bucket_script()
    env = environment(quickstart()["services"]["s3-init"])
    monkeypatch = clean_env
    for key, value in env.items():
        monkeypatch.setenv(key, value or "")
    seen = []
    monkeypatch.setattr(script, "s3_client", lambda archive: seen.append(archive) or client)
    bucket = env["AUDITSTREAM_ARCHIVE__S3_BUCKET"]
    stubber.add_response("create_bucket", {}, {**CREATE, "Bucket": bucket})
    stubber.add_response("get_object_lock_configuration", LOCK_ON, {"Bucket": bucket})
    assert script.main() == 0
    assert seen[0].s3_endpoint == env["AUDITSTREAM_ARCHIVE__S3_ENDPOINT"]


def test_bucket_step_refuses_a_non_s3_archive(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AUDITSTREAM_ARCHIVE__BACKEND", "filesystem")
    assert load_bucket_script().main() == 2
