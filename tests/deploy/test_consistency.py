"""The deployment files agree with each other and with the code: versions, ports, probe paths,
environment variables, mounts, and the security settings every container must carry."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

import pytest
import yaml
from flask import Flask

from regate.cli import build_parser
from regate.common.opa import OPA_VERSION
from regate.enforcer.bundle_service import BUNDLE_PATH, BundleSource, create_bundle_app
from regate.enforcer.health import bp as health_bp

from . import files

ENFORCER_PORT = 4000
# What the enforcer reads from the environment besides the config's os.environ/ references.
JWT_VARIABLES = {"JWT_PUBLIC_KEY_URL", "JWT_AUDIENCE", "JWT_ISSUER"}
SECRET_VARIABLES = {"LITELLM_MASTER_KEY", "OPENAI_API_KEY", "AZURE_API_KEY", "DATABASE_URL", "REDIS_URL"}
READINESS, LIVENESS = "/health/readiness", "/health/liveliness"


def opa_version() -> str:
    match = re.search(r'^OPA_VERSION="([^"]+)"', (files.ROOT / "scripts/ensure-opa").read_text(), re.M)
    assert match, "scripts/ensure-opa has no OPA_VERSION"
    return match.group(1)


def required_env() -> set[str]:
    names = files.config_env_references() | JWT_VARIABLES
    assert {"LITELLM_MASTER_KEY", "OPENAI_API_KEY", "OPENAI_API_BASE", "AZURE_API_KEY", "AZURE_API_BASE"} <= names
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return files.load_compose()


@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    return files.k8s_objects()


def enforcer_deployment() -> dict:
    return files.k8s_object("Deployment", "regate-enforcer")


def bundles_deployment() -> dict:
    return files.k8s_object("Deployment", "regate-bundles")


def cli(args: list[str]):
    return build_parser().parse_args(args)


def port_of(container: dict, name_or_number) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name_or_number in ports, f"{container['name']} has no port named {name_or_number}"
    return ports[name_or_number]


def addr_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


# -- versions and images -------------------------------------------------------------------------


def test_opa_is_the_same_version_everywhere(compose):
    version = opa_version()
    assert OPA_VERSION == version
    image = f"openpolicyagent/opa:{version}"
    assert compose["services"]["opa"]["image"] == image
    opa_containers = [c for o in files.k8s_objects() if o["kind"] == "Deployment"
                      for c in files.pod_containers(o).values() if c["image"].startswith("openpolicyagent/")]
    assert opa_containers, "no OPA sidecar in the manifests"
    assert {c["image"] for c in opa_containers} == {image}


def test_base_images_are_pinned_to_exact_versions(compose, image_spec):
    names = {stage.name for stage in image_spec.stages if stage.name}
    bases = {stage.base for stage in image_spec.stages if stage.base not in names}  # FROM deps AS wheel: same base
    assert len(bases) == 1, f"build and runtime stages must share one base image: {bases}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases.pop())
    assert re.fullmatch(r"postgres:15\.\d+-bookworm", compose["services"]["postgres"]["image"])
    regate_images = {c["image"] for name in ("regate-enforcer", "regate-bundles")
                     for c in files.pod_containers(files.k8s_object("Deployment", name)).values()
                     if not c["image"].startswith("openpolicyagent/")}
    assert len(regate_images) == 1 and not regate_images.pop().endswith(":latest")


# -- the Dockerfile ------------------------------------------------------------------------------


def test_image_runs_regate_serve_as_a_non_root_user(image_spec):
    assert image_spec.entrypoint == ["regate"]
    args = cli(image_spec.cmd)
    assert (args.command, args.config, args.port) == ("serve", "/etc/regate/config.yaml", ENFORCER_PORT)
    assert args.host == "0.0.0.0"
    assert image_spec.exposed == [str(ENFORCER_PORT)]
    uid, _, gid = image_spec.user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    env = image_spec.env
    assert env["REGATE_DATA_DIR"] == "/var/lib/regate"
    assert urlsplit(env["REGATE_OPA_URL"]).port == 8181
    assert "PYTHONPATH" not in env and env["PYTHONSAFEPATH"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_healthcheck_probes_liveliness_on_the_exposed_port(image_spec):
    assert image_spec.healthcheck[:2] == ["python", "-c"]
    urls = re.findall(r"https?://[^'\"]+", image_spec.healthcheck[2])
    assert len(urls) == 1
    url = urlsplit(urls[0])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", ENFORCER_PORT, LIVENESS)
    for option in ("interval", "timeout", "start-period", "retries"):
        assert option in image_spec.healthcheck_options


def test_final_image_has_no_build_tools(image_spec):
    final = image_spec.final
    assert len(image_spec.stages) >= 2, "dependencies are installed in a separate stage"
    runs = " ".join(i.args for i in final.all("RUN"))
    for forbidden in ("apt-get install", "apt install", "gcc", "build-essential", "pip install"):
        assert forbidden not in runs, forbidden
    assert "pip uninstall" in runs, "the runtime stage removes the package installer"
    deps_runs = " ".join(i.args for i in image_spec.stages[0].all("RUN"))
    assert "--only-binary=:all:" in deps_runs, "wheels only: no compiler needed, none pulled in"
    assert [c.dest for c in files.copies(final) if c.from_stage] == ["/opt/venv"]


def test_build_context_holds_the_sources_and_no_secrets(image_spec):
    context = set(files.DockerIgnore().context_files())
    needed = {"pyproject.toml"}
    needed |= {"README.md", "examples/regate.yaml"}  # the wheel's readme, the demo's config
    for package in ("common", "compiler", "enforcer", "regate", "devtools", "schemas", "templates"):
        needed |= {str(p.relative_to(files.ROOT)) for p in (files.ROOT / package).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts}
    assert needed - context == set()
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    assert not [f for f in context if f.startswith("examples/") and f != "examples/regate.yaml"]
    for unwanted in ("tests/", "deploy/", ".git/", ".venv/", ".regate/", ".cache/", "bench/"):
        assert not [f for f in context if f.startswith(unwanted)], unwanted
    assert not [f for f in context if re.search(r"(^|/)\.env|\.pem$|\.key$", f)]
    for copy in files.copies(image_spec.final):
        for source in copy.sources if copy.from_stage is None else []:
            assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), source


def test_dockerignore_matching_follows_docker_rules(tmp_path):
    # The matcher the checks above rely on: parents count, the last match wins, ** spans directories.
    ignore_file = tmp_path / ".dockerignore"
    ignore_file.write_text("*\n!src/\n**/__pycache__\n!src/keep/__pycache__\n")
    ignore = files.DockerIgnore(ignore_file)
    assert ignore.included("src/a/b.py")
    assert not ignore.included("other.py") and not ignore.included("tests/x.py")
    assert not ignore.included("src/a/__pycache__/b.pyc")
    assert ignore.included("src/keep/__pycache__/c.pyc")


# -- probe paths and ports exist in the code ---------------------------------------------------------


def test_probe_paths_are_routes_of_the_services(tmp_path):
    app = Flask("probe-check")
    app.register_blueprint(health_bp)
    enforcer_routes = {r.rule for r in app.url_map.iter_rules()}
    assert {READINESS, LIVENESS} <= enforcer_routes
    config = tmp_path / "config.yaml"
    config.write_text(files.EXAMPLE_CONFIG.read_text())
    bundle_routes = {r.rule for r in create_bundle_app(BundleSource(config)).url_map.iter_rules()}
    assert {"/health", BUNDLE_PATH} <= bundle_routes


# -- compose -------------------------------------------------------------------------------------------


def test_compose_gives_the_enforcer_every_variable_it_needs(compose, image_spec):
    environment = compose["services"]["enforcer"]["environment"]
    assert required_env() | {"REGATE_OPA_URL", "DATABASE_URL"} <= set(environment)
    # One enforcer: its workers count rate limits exactly in the host's SQLite file, no Redis needed.
    assert "REDIS_URL" not in environment and compose["services"]["enforcer"].get("scale", 1) == 1
    for name in SECRET_VARIABLES - {"DATABASE_URL", "REDIS_URL"}:
        assert environment[name].startswith("${" + name + ":?"), f"{name} must be required, from deploy/.env"


def test_env_example_lists_every_required_variable_without_secrets():
    variables = files.compose_variables(files.COMPOSE.read_text())
    example = files.read_env_file()
    required = {name for name, op in variables.items() if op in (None, ":?", "?")}
    assert required - set(example) == set()
    for name in ("POSTGRES_PASSWORD", "LITELLM_MASTER_KEY", "OPENAI_API_KEY", "AZURE_API_KEY"):
        assert example[name] == "", f"{name} must be empty in the committed example"


def test_compose_refuses_to_start_until_the_secrets_are_filled_in():
    text = files.COMPOSE.read_text()
    example = files.read_env_file()
    with pytest.raises(files.MissingVariable):
        files.interpolate(text, example)
    filled = {k: (v or f"filled-{k.lower()}") for k, v in example.items()}
    rendered = yaml.safe_load(files.interpolate(text, filled))
    assert rendered["services"]["enforcer"]["environment"]["LITELLM_MASTER_KEY"] == "filled-litellm_master_key"


def test_compose_wires_the_services_together(compose, image_spec):
    services = compose["services"]
    env = services["enforcer"]["environment"]
    rendered_env = {k: files.interpolate(v, {"POSTGRES_PASSWORD": "pw"}) for k, v in env.items()
                    if k in ("REGATE_OPA_URL", "DATABASE_URL")}

    opa_cmd = services["opa"]["command"]
    assert opa_cmd[:2] == ["run", "--server"]
    opa_url = urlsplit(rendered_env["REGATE_OPA_URL"])
    assert opa_url.hostname == "opa" and opa_url.port == addr_port(files.flag_value(opa_cmd, "--addr"))[1]

    db = urlsplit(rendered_env["DATABASE_URL"])
    postgres_env = services["postgres"]["environment"]
    assert db.scheme == "postgresql" and db.hostname == "postgres" and db.port == 5432
    assert db.username == postgres_env["POSTGRES_USER"] and db.path == "/" + postgres_env["POSTGRES_DB"]

    opa_config = yaml.safe_load(files.OPA_CONFIG.read_text())
    bundles_args = cli(services["bundles"]["command"])
    assert (bundles_args.command, bundles_args.bundle_command) == ("bundle", "serve")
    service_url = urlsplit(opa_config["services"]["regate"]["url"])
    assert (service_url.hostname, service_url.port) == ("bundles", bundles_args.port)
    assert "/" + opa_config["bundles"]["regate"]["resource"] == BUNDLE_PATH

    enforcer_ports = services["enforcer"]["ports"]
    assert enforcer_ports == [f"127.0.0.1:{ENFORCER_PORT}:{ENFORCER_PORT}"]
    for name in ("opa", "bundles", "postgres"):
        assert "ports" not in services[name], f"{name} must not be published"
    assert compose["networks"]["backend"]["internal"] is True
    assert set(services["enforcer"]["networks"]) == {"backend", "frontend"}
    for name in ("opa", "bundles", "postgres"):
        assert services[name]["networks"] == ["backend"]


def _mounts(service: dict) -> dict[str, dict]:
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = volume
    return out


def test_compose_mounts_the_example_config_read_only(compose, image_spec):
    services = compose["services"]
    config_path = cli(image_spec.cmd).config
    enforcer_mount = _mounts(services["enforcer"])[config_path]
    assert enforcer_mount["read_only"] is True
    assert (files.DEPLOY / enforcer_mount["source"]).resolve() == files.EXAMPLE_CONFIG

    bundles_config = cli(services["bundles"]["command"]).config
    directory = posixpath.dirname(bundles_config)
    bundles_mount = _mounts(services["bundles"])[directory]
    assert bundles_mount["read_only"] is True
    host_file = (files.DEPLOY / bundles_mount["source"] / posixpath.basename(bundles_config)).resolve()
    assert host_file == files.EXAMPLE_CONFIG

    opa_file = files.flag_value(services["opa"]["command"], "--config-file")
    opa_mount = _mounts(services["opa"])[opa_file]
    assert opa_mount["read_only"] is True and (files.DEPLOY / opa_mount["source"]).resolve() == files.OPA_CONFIG


def test_compose_starts_in_dependency_order_on_health(compose):
    services = compose["services"]
    assert services["enforcer"]["depends_on"] == {"opa": {"condition": "service_healthy"},
                                                  "postgres": {"condition": "service_healthy"}}
    assert services["opa"]["depends_on"] == {"bundles": {"condition": "service_healthy"}}
    for name in ("opa", "bundles", "postgres"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    # The enforcer's health check is the image's HEALTHCHECK: compose must not turn it off.
    assert "healthcheck" not in services["enforcer"]
    opa_check = " ".join(services["opa"]["healthcheck"]["test"])
    assert f":{addr_port(files.flag_value(services['opa']['command'], '--addr'))[1]}/health?bundles" in opa_check
    bundles_port = cli(services["bundles"]["command"]).port
    assert f"127.0.0.1:{bundles_port}/health" in " ".join(services["bundles"]["healthcheck"]["test"])


def test_compose_containers_are_locked_down(compose, image_spec):
    for name in ("enforcer", "bundles", "opa"):
        service = compose["services"][name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    # With a read-only root, the data dir (spend spool) is a volume.
    targets = {m["target"] if isinstance(m, dict) else m.split(":")[1] for m in compose["services"]["enforcer"]["volumes"]}
    assert image_spec.env["REGATE_DATA_DIR"] in targets
    assert "/tmp" in compose["services"]["enforcer"]["tmpfs"]


# -- Kubernetes ----------------------------------------------------------------------------------------


def test_enforcer_pods_are_the_sidecar_pattern_with_two_replicas():
    deployment = enforcer_deployment()
    assert deployment["spec"]["replicas"] == 2
    spec = deployment["spec"]["template"]["spec"]
    (opa,) = [c for c in spec["initContainers"] if c["name"] == "opa"]
    assert opa["restartPolicy"] == "Always", "OPA is a native sidecar"
    (enforcer,) = spec["containers"]
    env = {e["name"]: e for e in enforcer["env"]}
    host, port = addr_port(files.flag_value(opa["args"], "--addr"))
    assert host == "127.0.0.1", "OPA's API stays on the pod's loopback"
    assert urlsplit(env["REGATE_OPA_URL"]["value"]).netloc == f"{host}:{port}"
    assert port_of(enforcer, "http") == ENFORCER_PORT
    # PostgreSQL is external: the replicas share it through DATABASE_URL from the Secret.
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "regate-secrets"
    assert not [o for o in files.k8s_objects() if o["kind"] == "StatefulSet"]


def test_probes_hit_the_paths_and_ports_the_services_serve():
    spec = enforcer_deployment()["spec"]["template"]["spec"]
    containers = files.pod_containers(enforcer_deployment())
    enforcer, opa = containers["enforcer"], containers["opa"]
    assert enforcer["readinessProbe"]["httpGet"]["path"] == READINESS
    assert enforcer["livenessProbe"]["httpGet"]["path"] == LIVENESS
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_of(enforcer, enforcer[probe]["httpGet"]["port"]) == ENFORCER_PORT
    _, diag_port = addr_port(files.flag_value(opa["args"], "--diagnostic-addr"))
    assert opa["startupProbe"]["httpGet"]["path"] == "/health?bundles"
    assert opa["readinessProbe"]["httpGet"]["path"] == "/health?bundles"
    assert opa["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_of(opa, opa[probe]["httpGet"]["port"]) == diag_port
    bundles = files.pod_containers(bundles_deployment())["bundles"]
    args = cli(bundles["args"])
    assert port_of(bundles, "http") == args.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert bundles[probe]["httpGet"]["path"] == "/health"
        assert port_of(bundles, bundles[probe]["httpGet"]["port"]) == args.port
    assert spec["terminationGracePeriodSeconds"] > enforcer["lifecycle"]["preStop"]["sleep"]["seconds"] + 30


def test_kubernetes_gives_the_enforcer_every_variable_it_needs():
    enforcer = files.pod_containers(enforcer_deployment())["enforcer"]
    env = {e["name"]: e for e in enforcer["env"]}
    # Two replicas share the store and the rate-limit counters (else each pod would count its own).
    assert required_env() | {"REGATE_OPA_URL", "DATABASE_URL", "REDIS_URL"} <= set(env)
    settings = files.k8s_object("ConfigMap", "regate-settings")["data"]
    secret = files.k8s_object("Secret", "regate-secrets")["stringData"]
    for name, entry in env.items():
        source = entry.get("valueFrom", {})
        if name in SECRET_VARIABLES:
            ref = source.get("secretKeyRef")
            assert ref and ref["name"] == "regate-secrets", f"{name} must come from the Secret"
            assert ref["key"] in secret
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] == "regate-settings" and ref["key"] in settings
    # Placeholders that fail closed: the master key is not an sk- key, the database host does not resolve.
    assert not secret["LITELLM_MASTER_KEY"].startswith("sk-")
    assert urlsplit(secret["DATABASE_URL"]).hostname.endswith(".invalid")
    assert urlsplit(secret["REDIS_URL"]).hostname.endswith(".invalid")


def test_secret_template_is_left_out_of_the_labelled_apply(k8s):
    for obj in k8s:
        labels = obj["metadata"].get("labels", {})
        if obj["kind"] == "Secret":
            assert "app.kubernetes.io/part-of" not in labels, "the template must not overwrite a real Secret"
        else:
            assert labels.get("app.kubernetes.io/part-of") == "regate", f"{obj['kind']}/{obj['metadata']['name']}"


def test_every_container_is_locked_down_and_sized(image_spec):
    uid = int(image_spec.user.partition(":")[0])
    for name in ("regate-enforcer", "regate-bundles"):
        pod = files.k8s_object("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in files.pod_containers(files.k8s_object("Deployment", name)).values():
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            run_as = context.get("runAsUser", pod["securityContext"].get("runAsUser"))
            assert run_as and run_as > 0
            if not container["image"].startswith("openpolicyagent/"):
                assert run_as == uid, "the image's USER"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
            assert "readinessProbe" in container and "livenessProbe" in container
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            # Read-only root: what the process writes is an emptyDir.
            writable = {p for p, m in mounts.items() if not m.get("readOnly")}
            assert all("emptyDir" in volumes[mounts[p]["name"]] for p in writable)
            if not container["image"].startswith("openpolicyagent/"):
                assert "/tmp" in writable, "gunicorn's worker heartbeat files"


def test_writable_directories_are_where_the_processes_write():
    deployment = enforcer_deployment()
    containers = files.pod_containers(deployment)
    enforcer_env = {e["name"]: e.get("value") for e in containers["enforcer"]["env"]}
    enforcer_mounts = {m["mountPath"] for m in containers["enforcer"]["volumeMounts"] if not m.get("readOnly")}
    assert enforcer_env["REGATE_DATA_DIR"] in enforcer_mounts
    opa_config = yaml.safe_load(files.k8s_object("ConfigMap", "regate-opa-config")["data"]["config.yaml"])
    opa_mounts = {m["mountPath"] for m in containers["opa"]["volumeMounts"] if not m.get("readOnly")}
    assert opa_config["persistence_directory"] in opa_mounts


def test_configmaps_carry_the_config_and_the_opa_config(image_spec):
    config = files.k8s_object("ConfigMap", "regate-config")["data"]
    assert config["config.yaml"] == files.EXAMPLE_CONFIG.read_text()
    image_config = cli(image_spec.cmd).config
    containers = files.pod_containers(enforcer_deployment())
    mount = {m["name"]: m for m in containers["enforcer"]["volumeMounts"]}["config"]
    assert posixpath.join(mount["mountPath"], "config.yaml") == image_config and "subPath" not in mount
    bundles = files.pod_containers(bundles_deployment())["bundles"]
    bundles_mount = {m["name"]: m for m in bundles["volumeMounts"]}["config"]
    assert "subPath" not in bundles_mount, "a subPath mount never sees ConfigMap updates"
    assert posixpath.join(bundles_mount["mountPath"], "config.yaml") == cli(bundles["args"]).config

    k8s_opa = yaml.safe_load(files.k8s_object("ConfigMap", "regate-opa-config")["data"]["config.yaml"])
    compose_opa = yaml.safe_load(files.OPA_CONFIG.read_text())
    url = urlsplit(k8s_opa["services"]["regate"]["url"])
    service = files.k8s_object("Service", "regate-bundles")
    assert url.hostname == service["metadata"]["name"] and url.port == service["spec"]["ports"][0]["port"]
    assert k8s_opa["bundles"]["regate"].pop("persist") is True
    k8s_opa.pop("persistence_directory")
    k8s_opa["services"]["regate"]["url"] = compose_opa["services"]["regate"]["url"]
    assert k8s_opa == compose_opa, "the two OPA configs differ only in the service URL and persistence"
    opa = containers["opa"]
    opa_mount = {m["name"]: m for m in opa["volumeMounts"]}["opa-config"]
    assert files.flag_value(opa["args"], "--config-file") == posixpath.join(opa_mount["mountPath"], "config.yaml")


def test_services_and_budget_select_the_pods(k8s):
    for service_name, deployment_name, port in (("regate-enforcer", "regate-enforcer", ENFORCER_PORT),
                                                ("regate-bundles", "regate-bundles", 8282)):
        service = files.k8s_object("Service", service_name)
        deployment = files.k8s_object("Deployment", deployment_name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (service_port,) = service["spec"]["ports"]
        main = deployment["spec"]["template"]["spec"]["containers"][0]
        assert service_port["port"] == port == port_of(main, service_port["targetPort"])
    budget = files.k8s_object("PodDisruptionBudget", "regate-enforcer")
    labels = enforcer_deployment()["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < budget["spec"]["minAvailable"] < enforcer_deployment()["spec"]["replicas"]
    policy = files.k8s_object("NetworkPolicy", "regate-bundles")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    namespaces = {o["metadata"].get("namespace") for o in k8s if o["kind"] != "Namespace"}
    assert namespaces == {"regate"}
    namespace = files.k8s_object("Namespace", "regate")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
