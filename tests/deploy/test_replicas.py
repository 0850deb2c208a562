"""Several replicas on shared state, as shipped: docker-compose.yml's `replicas` profile and the
kustomize overlay (and the chart values) for an external Redis and PostgreSQL. Each config file is
one the gateway accepts, with the real `state.*` keys.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from gateway.config.load import parse_settings
from tests.deploy.test_deploy import DEPLOY, run, tool
from tests.deploy.test_kubernetes import CHART, KUBERNETES_VERSION, kustomize, of_kind, rendered

SHARED_STATE = DEPLOY / "kustomize" / "shared-state"
ENV = {"GATEWAY_KEY": "k" * 32, "REDIS_PASSWORD": "r" * 24, "POSTGRES_PASSWORD": "p" * 24}


def compose_config() -> dict[str, object]:
    result = run(tool("docker-compose"), "-f", "docker-compose.yml", "--profile", "replicas", "config",
                 env={"GATEWAY_KEY": "x"})
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = yaml.safe_load(result.stdout)
    return loaded


def test_replicas_profile_is_two_gateways_behind_nginx_on_redis_and_postgres() -> None:
    services = compose_config()["services"]
    assert isinstance(services, dict)
    assert {"gateway-a", "gateway-b", "lb", "redis", "postgres"} <= set(services)
    # Outside the profile, `docker compose up` starts what it always did.
    assert {name for name, s in services.items() if "profiles" not in s} == {"gateway", "prometheus", "grafana"}
    assert {name for name, s in services.items() if s.get("profiles") == ["replicas"]} == {
        "gateway-a", "gateway-b", "lb", "redis", "postgres"}
    for name in ("gateway-a", "gateway-b"):
        replica = services[name]
        assert replica["volumes"][0].endswith("deploy/gateway-replicas.yaml:/etc/gateway/gateway.yaml:ro")
        # Passwords are passed through from the environment, never written into the file.
        assert replica["environment"]["REDIS_PASSWORD"] is None
        assert replica["environment"]["POSTGRES_PASSWORD"] is None
        # Stopping a replica lets it drain: compose waits longer than drain_timeout before SIGKILL.
        settings = parse_settings(yaml.safe_load((DEPLOY / "gateway-replicas.yaml").read_text()),
                                  "deploy/gateway-replicas.yaml", ENV)
        assert int(replica["stop_grace_period"].rstrip("s")) > settings.server.drain_timeout + 10
    # Only the load balancer is published, on loopback; the stores sit on a network with no way out.
    assert services["lb"]["ports"] == ["127.0.0.1:4100:8080/tcp"]
    for name in ("redis", "postgres", "gateway-a", "gateway-b"):
        assert "ports" not in services[name], name
    assert set(services["redis"]["networks"]) == set(services["postgres"]["networks"]) == {"state"}
    networks = compose_config()["networks"]
    assert isinstance(networks, dict) and networks["state"]["internal"] is True


def test_nginx_balances_over_both_replicas_without_buffering_streams() -> None:
    conf = (DEPLOY / "nginx" / "replicas.conf").read_text()
    assert re.findall(r"server (gateway-[ab]):4000;", conf) == ["gateway-a", "gateway-b"]
    assert "proxy_buffering off;" in conf
    assert re.search(r"listen 8080;", conf)
    services = compose_config()["services"]
    assert isinstance(services, dict) and services["lb"]["ports"][0].endswith(":8080/tcp")


def test_replicas_config_shares_state_through_redis_and_postgres() -> None:
    settings = parse_settings(yaml.safe_load((DEPLOY / "gateway-replicas.yaml").read_text()),
                              "deploy/gateway-replicas.yaml", ENV)
    assert settings.state.backend == "redis"
    assert settings.state.redis_url == f"redis://:{ENV['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.state.ledger == f"postgresql://gateway:{ENV['POSTGRES_PASSWORD']}@postgres:5432/gateway"
    assert settings.server.drain_delay < settings.server.drain_timeout


def test_shared_state_overlay_validates_and_wires_both_secrets(tmp_path: Path) -> None:
    path, docs = rendered(tmp_path, SHARED_STATE)
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    [container] = of_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    secrets = [source["secretRef"]["name"] for source in container["envFrom"]]
    assert secrets[-2:] == ["gateway-redis", "gateway-postgresql"]
    config = yaml.safe_load(of_kind(docs, "ConfigMap")["data"]["gateway.yaml"])
    env = {"GATEWAY_KEY": "k" * 32, "REDIS_URL": "rediss://:pw@redis.example:6379/0",
           "LEDGER_URL": "postgresql://gateway:pw@pg.example:5432/gateway"}
    settings = parse_settings(config, "deploy/kustomize/shared-state/gateway.yaml", env)
    assert (settings.state.backend, settings.state.redis_url, settings.state.ledger) == (
        "redis", env["REDIS_URL"], env["LEDGER_URL"])
    # Everything else is the base's: the overlay only adds shared state.
    base = yaml.safe_load(of_kind(kustomize(DEPLOY / "kustomize" / "base"), "ConfigMap")["data"]["gateway.yaml"])
    assert {k: v for k, v in config.items() if k != "state"} == {k: v for k, v in base.items() if k != "state"}


def test_chart_sets_the_same_state_keys_from_its_secrets() -> None:
    template = (CHART / "templates" / "configmap.yaml").read_text()
    overlay = yaml.safe_load((SHARED_STATE / "gateway.yaml").read_text())["state"]
    assert "backend: redis" in template and "redis_url: ${REDIS_URL}" in template
    assert "ledger: ${LEDGER_URL}" in template
    assert overlay["redis_url"] == "${REDIS_URL}" and overlay["ledger"] == "${LEDGER_URL}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())["state"]
    assert values["redis"]["onFailure"] == overlay["on_failure"]
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert ".Values.state.redis.urlSecret" in deployment and ".Values.state.postgresql.urlSecret" in deployment
